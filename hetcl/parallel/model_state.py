"""What a runtime holds for one model, in one object: its replica on each device, its executors
per (device, batch size), how it is trained (its parallel strategy) and where its optimizer
state lives. The model (graph.py) owns the host parameters and their version; this object keeps
the device copies in step with them, and after an update tells the model where the fresher
parameters are.

Strategies (strategies.py): data parallel until the model's first step on several devices
chooses: "data" stays, "hybrid" makes a Hybrid (hybrid.py), "auto" times both (auto.py) and
keeps the faster, handing weights and momentum over between them.
"""
from ..engine.executor import Executor
from ..engine.replica import Replica, state_on_device, state_on_host
from ..log import logger
from .auto import AutoTrial
from .hybrid import Hybrid


class ModelState:
    def __init__(self, runtime, model):
        self.rt, self.model = runtime, model
        self.replicas = {}   # device.index -> Replica
        self.executors = {}  # (device.index, n) -> Executor
        self.hybrid = None   # the Hybrid while the dense tail runs model-parallel
        self.trial = None    # the AutoTrial while parallel="auto" times both
        self.chosen = False  # the mode was chosen (at the first step on several devices)

    # --- device copies ----------------------------------------------------------------------
    def replica(self, device):
        """The replica on a device, brought up to date: a device that sat out steps (left out
        by the scheduler) gets the current parameters *and* optimizer state from a replica
        that took part, so it rejoins exactly in step."""
        rep = self.replicas.get(device.index)
        if rep is None:
            rep = self.replicas[device.index] = Replica(self.model, device)
        if rep.version != self.model.version:
            fresh = next((r for r in self.replicas.values()
                          if r.version == self.model.version), None)
            rep.sync()
            if fresh is not None:
                rep.state = state_on_device(device, state_on_host(fresh.state))
        return rep

    def executor(self, device, n):
        rep = self.replica(device)
        key = (device.index, n)
        if key not in self.executors:
            self.executors[key] = Executor(rep, n)
        return self.executors[key]

    def committed(self, updated):
        """After an update of `updated` (replicas, hybrid slices): a new version of the
        parameters, held by the devices until the host asks (model.parameters())."""
        holder = self.hybrid.download if self.hybrid else updated[0].download
        version = self.model.fresher_on_devices(holder)
        for rep in updated:
            rep.version = version
        if self.hybrid:
            self.hybrid.version = version

    def save_running(self):
        """Before a step: the running statistics of every replica on a device still in use
        copied aside, so that the step, redone after a device fault, blends them once
        (restore_running after the fault). Nothing with one device left: a fault there ends
        the training."""
        if len(self.rt.devices) - len(self.rt.failed) > 1:
            for rep in self._alive_replicas():
                rep.save_running()

    def restore_running(self):
        for rep in self._alive_replicas():
            rep.restore_running()

    def _alive_replicas(self):
        alive = {d.index for i, d in enumerate(self.rt.devices) if i not in self.rt.failed}
        return [rep for index, rep in self.replicas.items() if index in alive]

    # --- parallel mode ----------------------------------------------------------------------
    def choose_mode(self, parallel, devices_in_step, last_bytes):
        """Before each step: the mode for it (the model's first step on several devices fixes
        hybrid or the auto trial; the trial then moves on). -> a message when auto chose."""
        if not self.chosen and devices_in_step > 1:
            self.chosen = True
            if parallel == "auto" and Hybrid.supports(self.model):
                self.trial = AutoTrial()
            if parallel == "hybrid":
                self.hybrid = Hybrid(self.rt, self.model)
        if self.trial is None:
            return None
        outcome = self.trial.step(last_bytes)
        if outcome == "hybrid":
            self.hybrid = Hybrid(self.rt, self.model)
        elif outcome is not None:
            best, message = outcome
            logger.warning(message)
            self.trial = None
            if best == "data":
                self._to_data()
            return message
        return None

    def _to_data(self):
        """Hand a model trained hybrid back to data-parallel replicas (parameters and
        optimizer state from the slices)."""
        state = self.hybrid.optimizer_state()
        self.hybrid = None
        for device in self.rt.devices:
            rep = self.replica(device)  # uploads the parameters assembled from the slices
            rep.state = state_on_device(device, state)

    def mode(self):
        return "hybrid" if self.hybrid else "data"

    def clip_scale(self, opt, updated):
        """What the gradients of a step that updates `updated` are taken times: the
        optimizer's clipping factor for their global norm - counting each gradient once: one
        data-parallel replica (all hold the summed gradients), or one hybrid head and every
        slice."""
        holders = [self.hybrid.fresh_head()] + list(self.hybrid.slices.values()) \
            if self.hybrid else updated[:1]
        return opt.clip_scale(sum(opt.sum_of_squares(h) for h in holders))

    # --- optimizer state --------------------------------------------------------------------
    def _trained_hybrid(self):
        """The hybrid state once it holds parameters (it ran a step), else None."""
        return self.hybrid if self.hybrid is not None and self.hybrid.version is not None \
            else None

    def optimizer_state(self):
        """Optimizer buffers of the model (identical on every replica): {optim.state_key(kind,
        name): array}."""
        hybrid = self._trained_hybrid()
        return hybrid.optimizer_state() if hybrid else self.data_optimizer_state()

    def data_optimizer_state(self):
        """The optimizer state held by the data-parallel replicas (hybrid.py starts from it):
        one that took part in the last step (a device the scheduler left out has an old one)."""
        reps = sorted(self.replicas.values(), key=lambda r: r.version != self.model.version)
        if not reps:
            return {}
        return state_on_host(reps[0].state)

    def load_optimizer_state(self, state):
        hybrid = self._trained_hybrid()
        if hybrid:
            hybrid.load_optimizer_state(state)
        for device in self.rt.devices:
            self.replica(device).state = state_on_device(device, state)
