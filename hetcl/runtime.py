"""Run a Graph on devices: parameter replicas, per-batch-size executors, and the step.

Replicas, resident data and executors (one model on one device) are in executor.py.
Runtime  - forward / gradients / train_step over the selected devices. With several devices the
           batch is split into contiguous shards sized by the Scheduler (scheduler.py); every
           shard's loss and gradients are already divided by the global batch size, so the
           gradients are summed across devices (comm.py: per layer, overlapped with the
           backward pass, summed on the devices in a fixed order) and the same update runs on
           every replica, which therefore stay identical. A device that fails mid-step is
           removed with a warning and the step is redone on the others: no step lost, none
           counted twice (faults.py). With an mpi.World, each process (rank) takes its slice
           of every global batch first, and the sums span the ranks too (mpi.py, comm.py).
           The parallel modes (data, hybrid, auto) and where each keeps the optimizer state
           are in modes.py; steps on data sets kept on the devices in resident_steps.py.
"""
import contextlib
import time

import numpy as np
import pyopencl as cl

from . import inputs
from .auto import AutoTrial
from .buffers import to_device
from .comm import GradientExchange
from .device import select_devices, share_contexts
from .errors import DeviceFault, HetclError, ShapeError
from .executor import Executor, Replica, StepResult, interleave
from .faults import FaultRecovery
from .hybrid import Hybrid
from .hybrid_plan import MODES
from .modes import ParallelModes
from .resident_steps import ResidentSteps
from .scheduler import Scheduler


class Runtime(ParallelModes, FaultRecovery, ResidentSteps):
    # Steps between the scheduler's measured steps, after the first 20. A measured step waits
    # for every read and profiles every command: 2x H200, cifar-cnn batch 512, every 8th step
    # 79.0k/80.2k images/s, every 32nd 81.9k/82.3k (the scheduler smooths its samples anyway).
    measure_every = 32

    def __init__(self, devices="all", granule=16, adaptive=True, world=None, parallel="data"):
        """adaptive=False: split in proportion to speed but never drop a device.
        parallel: "data" (every layer data-parallel), "hybrid" (dense layers model-parallel:
        hybrid.py) or "auto" (both timed over a model's first steps on several devices, then
        the faster kept and logged: auto.py).
        world: an mpi.World (mpi.detect()) to train across processes: each rank takes its
        slice of every global batch and gradients are summed across ranks too. With
        devices "gpu" (or "dgpu") on a node with several GPUs, each rank then takes the one
        matching its rank on the node."""
        if parallel not in MODES:
            raise HetclError(f"unknown parallel mode {parallel!r}: use {', '.join(MODES)}")
        if world is not None and parallel != "data":
            raise HetclError(f"--parallel {parallel} runs within one process; under MPI use "
                             f"--parallel data")
        self.parallel, self._hybrid, self._trial, self.messages = parallel, {}, {}, []
        self.world = world
        self.devices = select_devices(devices)
        if world is not None:
            self.devices = world.pick(self.devices, devices)
        share_contexts(self.devices)
        self._replicas, self._executors, self._resident = {}, {}, {}
        self._label_ranges = {}  # (id(images), id(labels)) of resident sets -> (min, max)
        self.scheduler = Scheduler([f"{d.index}:{d.name}" for d in self.devices], granule,
                                   adaptive=adaptive, exchange_alone=world is not None)
        self._exchange = GradientExchange()
        self.failed = set()  # positions in self.devices of devices that failed
        self.steps = 0       # training steps taken
        self.last_split = None
        self.last_bytes = 0  # bytes moved between the devices and the host in the last step
        self._step_started = None

    def replica(self, model, device):
        """The model's replica on a device, brought up to date: a device that sat out steps
        (dropped by the scheduler) gets the current parameters *and* optimizer state from a
        replica that took part, so it rejoins exactly in step."""
        key = (id(model), device.index)
        if key not in self._replicas:
            self._replicas[key] = Replica(model, device)
        rep = self._replicas[key]
        if rep.version != model.version:
            fresh = next((r for (mid, _), r in self._replicas.items()
                          if mid == id(model) and r.version == model.version), None)
            rep.sync()
            if fresh is not None:
                for kind, buffers in fresh.state.items():
                    rep.state[kind] = {k: to_device(device, v.get()) for k, v in buffers.items()}
        return rep

    def executor(self, model, device, n):
        key = (id(model), device.index, n)
        rep = self.replica(model, device)
        if key not in self._executors:
            self._executors[key] = Executor(rep, n)
        return self._executors[key]

    def first_device(self):
        """Where single-device work (inference) runs: the first device that has not failed."""
        return next(d for i, d in enumerate(self.devices) if i not in self.failed)

    def _prepare(self, model, x, y=None):
        """x as float32 and the model built for it; x and the labels y of a training batch
        checked before any kernel runs (inputs.py)."""
        x = inputs.batch(model, x)
        if y is not None:
            inputs.check_labels(model, y, len(x))
            inputs.check_finite(x)
        return x

    def forward(self, model, x, batch_size=256):
        """Logits for x (numpy in, numpy out), in batches on the first device."""
        x = self._prepare(model, x)
        device = self.first_device()
        n = min(batch_size, len(x))
        ex = self.executor(model, device, n)
        outs = []
        for start in range(0, len(x), n):
            chunk = x[start:start + n]
            if len(chunk) < n:  # pad the last batch: no new kernels for one odd size
                chunk = np.concatenate([chunk, np.zeros((n - len(chunk),) + chunk.shape[1:],
                                                        np.float32)])
            outs.append(ex.forward(chunk).get()[:len(x) - start])
        return np.concatenate(outs)

    def pause(self):
        """The caller stopped stepping for a while (a benchmark timing something else): the
        scheduler times steps start to start, and the next one's would include the pause."""
        self._step_started = None

    def _split(self, n, split):
        """[(device position, start, stop)] of the devices that get samples this step."""
        alive = [i for i in range(len(self.devices)) if i not in self.failed]
        if split is not None:
            if len(split) != len(self.devices) or sum(split) != n or min(split) < 0:
                raise ShapeError(f"split {list(split)} must give each of the "
                                 f"{len(self.devices)} devices a share, summing to {n}")
            sizes = list(split)
        elif len(alive) == 1:
            sizes = [n if i == alive[0] else 0 for i in range(len(self.devices))]
        else:
            sizes = self.scheduler.split(n)
        self.last_split = sizes
        out, start = [], 0
        for i, size in enumerate(sizes):
            if size:
                out.append((i, start, start + size))
            start += size
        return out

    def _step(self, model, n, feed, split=None, defer=False):
        """One forward/loss/backward of n samples over the devices; feed(executor, a, b) puts
        samples a..b on the executor's device. A device that fails is removed and the step is
        redone on the others. defer: do not wait for the loss (StepResult reads it later).
        -> StepResult, replicas that took part"""
        if split is None and len(self.devices) - len(self.failed) > 1:
            # The scheduler times whole steps, start to start, but not measured ones: they
            # wait for every kernel's times and would make the configuration that had them
            # (the first 20 steps) look slower in its trials.
            now = time.perf_counter()
            if self._step_started is not None:
                started, measured = self._step_started
                self.scheduler.end_step(None if measured else now - started)
            self._step_started = (now, False)
        offset, stop = self.world.shard(n) if self.world else (0, n)  # this rank's slice
        plan = self._split(stop - offset, split)
        exchange = self._exchange if len(plan) > 1 or self.world else None
        if exchange:
            exchange.begin()
        # Reading every kernel's profiling times costs host time (~1 us an event): the
        # scheduler gets every step's at first, then every measure_every-th (it smooths them).
        measure = exchange is not None and len(plan) > 1 and \
            (self.steps < 20 or self.steps % self.measure_every == 0)
        for device in self.devices:
            device.kernel_events = None  # (left on by a step that failed)
            # Profiling costs host time per command (device.py); only measured steps need it
            # (back on after the step: _profiling_restored).
            device.profiling = measure
        if measure and self._step_started is not None:
            self._step_started = (self._step_started[0], True)
        # A model runs hybrid from its first step on several devices on (then even when the
        # scheduler leaves one device: its dense slices live there).
        if id(model) not in self._hybrid and len(plan) > 1:
            if self.parallel == "auto" and Hybrid.supports(model):
                self._trial[id(model)] = AutoTrial()
            self._hybrid[id(model)] = Hybrid(self, model) if self.parallel == "hybrid" else None
        if id(model) in self._trial:
            self._auto(model)
        if self._hybrid.get(id(model)):
            return self._hybrid_step(model, n, feed, plan, exchange, measure, split)
        runs, current = [], None

        def turn(k):  # which device an OpenCL error would come from
            nonlocal current
            current = runs[k][0]
        try:
            for i, a, b in plan:
                current = i
                self._maybe_fault(self.devices[i])
                ex = self.executor(model, self.devices[i], b - a)
                if measure:  # the scheduler's measure of the device: its kernels' busy time
                    self.devices[i].kernel_events = []
                feed(ex, offset + a, offset + b)
                runs.append((i, ex, ex.enqueue_step(n, exchange.reader(ex) if exchange else None)))
            dones = interleave([step for _, _, step in runs], turn)  # the loss results' reads
            result = StepResult([(self.devices[i], done) for (i, _, _), done in zip(runs, dones)])
            if not defer or self.world:
                for (i, _, _), done in zip(runs, dones):
                    current = i
                    done[0].wait()
                result.get()
            current = None
            times = exchange.reduce(self.world, measure) if exchange else None
            self.last_bytes = exchange.bytes if exchange else 0
        except (cl.Error, DeviceFault) as e:
            if self.world and current is None:  # other ranks are inside this step's sums
                self.world.abort(f"OpenCL error while exchanging gradients: {e}")
            return self._recover(model, n, feed, current, e)
        if self.world:
            loss, correct = self.world.sum(list(result.get()))
            result = StepResult(value=(loss, int(round(correct))))
        if times is not None and split is None:
            self.scheduler.record(self.last_split, *self._per_device(plan, runs, times))
        return result, [ex.replica for _, ex, _ in runs]

    def _hybrid_step(self, model, n, feed, plan, exchange, measure, split):
        try:
            for i, _, _ in plan:
                self._maybe_fault(self.devices[i])
            loss, correct, updates, times = self._hybrid[id(model)].step(
                plan, n, feed, exchange, measure)
            result = StepResult(value=(loss, correct))
        except (cl.Error, DeviceFault) as e:
            raise HetclError(f"a device failed during a hybrid step ({e}); its slice of the "
                             f"dense layers is lost with it: resume from the last checkpoint "
                             f"with --parallel data to train on without it") from e
        self.last_bytes = self._hybrid[id(model)].bytes
        if times is not None and split is None:
            runs = [(i, self._hybrid[id(model)].executor(i, b - a), None) for i, a, b in plan]
            self.scheduler.record(self.last_split, *self._per_device(plan, runs, times))
        return result, updates

    def _per_device(self, plan, runs, times):
        """The scheduler's inputs. An executor's first step is not measured: the kernels it
        built on the host kept the device waiting (and the other devices with it)."""
        compute, exchange = [None] * len(self.devices), [0.0] * len(self.devices)
        for (i, _, _), (_, ex, _), (c, x) in zip(plan, runs, times):
            if ex.steps > 1:
                compute[i], exchange[i] = c, x
        return compute, exchange

    def _numpy_step(self, model, x, y, split):
        x = self._prepare(model, x, y)
        y = np.asarray(y)
        return self._step(model, len(x), lambda ex, a, b: ex.set_input(x[a:b], y[a:b]), split)

    def gradients(self, model, x, y, split=None):
        """(loss, {name: gradient}) of the batch, without changing the parameters.
        split: optional shard size per device (default: the scheduler's)."""
        with self._profiling_restored():
            result, replicas = self._numpy_step(model, x, y, split)
            loss = result.get()[0]
        if self._hybrid.get(id(model)):
            return loss, self._hybrid[id(model)].gradients()
        return loss, {k: v.get() for k, v in replicas[0].grads.items()}

    @contextlib.contextmanager
    def _profiling_restored(self):
        """Around the public step methods: a step turns profiling off unless the scheduler
        measures it (device.py: it costs host time per command); whatever happens inside,
        it is back on for the caller - the tuner and benchmarks read profiling events - and
        the switch is lazy, so it costs nothing until someone else enqueues."""
        try:
            yield
        finally:
            for device in self.devices:
                device.profiling = True

    def train_step(self, model, opt, x, y, return_correct=False, split=None):
        """One SGD step on a numpy batch (x already normalised). -> loss [, correct count]"""
        with self._profiling_restored():
            result, replicas = self._numpy_step(model, x, y, split)
            self._update(model, opt, replicas)
        loss, correct = result.get()
        return (loss, correct) if return_correct else loss

    def _update(self, model, opt, replicas):
        for rep in replicas:
            opt.apply(rep)
        opt.steps += 1
        self.steps += 1
        model.version += 1
        for rep in replicas:
            rep.version = model.version
        hybrid = self._hybrid.get(id(model))
        model._pull = hybrid.download if hybrid else replicas[0].download
        if hybrid:
            hybrid.version = model.version
