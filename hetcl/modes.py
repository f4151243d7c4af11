"""The runtime's parallel modes per model (Runtime(parallel=...)): data parallelism, hybrid
(hybrid.py) or auto (auto.py's trial of both), the hand-over between them, and the optimizer
state wherever a mode keeps it. A mixin of runtime.Runtime: it uses the runtime's replicas,
devices, _hybrid (model id -> Hybrid or None) and _trial (model id -> AutoTrial)."""
import numpy as np

from .buffers import to_device
from .hybrid import Hybrid
from .log import logger


class ParallelModes:
    def _auto(self, model):
        """parallel="auto" (auto.py): switch to hybrid for its turn, then keep the faster."""
        outcome = self._trial[id(model)].step(self.last_bytes)
        if outcome == "hybrid":
            self._hybrid[id(model)] = Hybrid(self, model)
        elif outcome is not None:
            best, msg = outcome
            self.messages.append(msg)
            logger.warning(msg)
            del self._trial[id(model)]
            if best == "data":
                self._to_data(model)

    def _to_data(self, model):
        """Hand a model trained hybrid back to data-parallel replicas (parameters and
        momentum from the slices)."""
        state = self._hybrid[id(model)].optimizer_state()
        self._hybrid[id(model)] = None
        for device in self.devices:
            rep = self.replica(model, device)  # uploads the parameters assembled from the slices
            rep.state["momentum"] = {k: to_device(device, v) for k, v in state.items()}

    def optimizer_state(self, model):
        """Optimizer buffers of the model (identical on every replica): {name: array}."""
        hybrid = self._trained_hybrid(model)
        return hybrid.optimizer_state() if hybrid else self.data_optimizer_state(model)

    def _trained_hybrid(self, model):
        """The model's hybrid state once it holds parameters (it ran a step), else None."""
        hybrid = self._hybrid.get(id(model))
        return hybrid if hybrid is not None and hybrid.version is not None else None

    def data_optimizer_state(self, model):
        """The optimizer state held by the data-parallel replicas (hybrid.py starts from it):
        one that took part in the last step (a device the scheduler left out has an old one)."""
        reps = sorted((r.version != model.version, i) for i, ((mid, _), r)
                      in enumerate(self._replicas.items()) if mid == id(model))
        if not reps:
            return {}
        rep = list(self._replicas.values())[reps[0][1]]
        return {k: v.get() for k, v in rep.state.get("momentum", {}).items()}

    def load_optimizer_state(self, model, state):
        hybrid = self._trained_hybrid(model)
        if hybrid:
            hybrid.load_optimizer_state(state)
        for device in self.devices:
            rep = self.replica(model, device)
            rep.state["momentum"] = {k: to_device(device, np.asarray(v, np.float32))
                                     for k, v in state.items()}
