"""Run a Graph on devices: forward / gradients / train_step. Several devices split the batch
into contiguous shards sized by the Scheduler (scheduler.py); shards' losses and gradients are
divided by the global batch size, so the gradients are summed across devices (comm.py: per
layer, overlapped with the backward pass, in a fixed order) and every replica's identical
update keeps them identical (batch norm's statistics are the whole batch's: batch_sums.py).
A step (step_on_devices) reads top to bottom: time it, take this rank's slice, split, run the
model's strategy (strategies.py), record; a device that fails mid-step is removed with a
warning and the step redone on the others with the same arguments, from the same running
statistics: no step lost, none counted twice (faults.py). With an mpi.World, each process
(rank) takes its slice of every global batch first, and the sums span the ranks too (mpi.py,
comm.py). Per model it holds a ModelState (model_state.py); data sets, a ResidentSets."""
import contextlib
import time
import weakref

import numpy as np

from ..backend.device import select_devices, share_contexts
from ..engine.executor import StepResult
from ..engine.resident_sets import ResidentSets
from ..errors import HetclError, ShapeError
from ..model import inputs
from . import faults
from .batch_sums import step_contexts
from .comm import GradientExchange
from .hybrid_plan import MODES
from .inference import inference_device, logits_in_batches, probabilities
from .model_state import ModelState
from .scheduler import Scheduler
from .strategies import STRATEGIES, StepFailed
from .trace import Tracer


class Runtime:
    # Steps between the scheduler's measured steps, after the first 20: a measured step waits
    # for every read and profiles every command (docs/benchmarks.md, "Several devices").
    measure_every = 32

    def __init__(self, devices="all", granule=16, adaptive=True, world=None, parallel="data",
                 tracer=None):
        """adaptive=False: split in proportion to speed but never drop a device.
        parallel: "data" (every layer data-parallel), "hybrid" (dense layers model-parallel:
        hybrid.py) or "auto" (both timed over a model's first steps on several devices, then
        the faster kept and logged: auto.py).
        world: an mpi.World (mpi.detect()): each rank takes its slice of every global batch,
        gradients are summed across ranks too; with devices "gpu" (or "dgpu") on a node with
        several GPUs each rank takes the one matching its rank on the node.
        tracer: a trace.Tracer that receives the phases of every step (tools/profile_step.py)."""
        if parallel not in MODES:
            raise HetclError(f"unknown parallel mode {parallel!r}: use {', '.join(MODES)}")
        if world is not None and parallel != "data":
            raise HetclError(f"--parallel {parallel} runs within one process; under MPI use "
                             f"--parallel data")
        self.parallel, self.messages, self.world = parallel, [], world
        self.tracer = tracer or Tracer()
        self.devices = select_devices(devices)
        if world is not None:
            self.devices = world.pick(self.devices, devices)
        share_contexts(self.devices)
        self._models = weakref.WeakKeyDictionary()  # model -> ModelState
        self.resident_sets = ResidentSets()
        self.scheduler = Scheduler([f"{d.index}:{d.name}" for d in self.devices], granule,
                                   adaptive=adaptive, exchange_alone=world is not None)
        self._exchange = GradientExchange(self.tracer)
        self.failed = set()  # positions in self.devices of devices that failed
        self.steps = 0       # training steps taken
        self.last_split = None
        self.last_bytes = 0  # bytes moved between the devices and the host in the last step
        self._step_started = None

    def state(self, model):
        """The model's ModelState on this runtime (made on first use)."""
        if model not in self._models:
            self._models[model] = ModelState(self, model)
        return self._models[model]

    def modes(self):  # {model: "data" or "hybrid"} of the models this runtime trains
        return {model: st.mode() for model, st in self._models.items()}

    def replica(self, model, device):
        return self.state(model).replica(device)

    def executor(self, model, device, n):
        return self.state(model).executor(device, n)

    def optimizer_state(self, model):
        return self.state(model).optimizer_state()

    def data_optimizer_state(self, model):
        return self.state(model).data_optimizer_state()

    def load_optimizer_state(self, model, state):
        self.state(model).load_optimizer_state(state)

    def inference_device(self):
        """Where single-device work (inference) runs (inference.py: the fastest device left)."""
        return inference_device(self.devices, self.failed, self.scheduler.speed)

    def forward(self, model, x, batch_size=256):
        """Logits for x (numpy in, numpy out), in batches on one device, in evaluation
        mode (batch norm's running statistics, no dropout)."""
        x = inputs.batch(model, x)  # as float32, and the model built for it
        return logits_in_batches(self.executor(model, self.inference_device(),
                                               min(batch_size, len(x))), x)

    def predict(self, model, x, batch_size=256):
        """Class probabilities for x [N, classes] (float32): forward's logits through the
        softmax (or, for a sigmoid_bce model, the sigmoid) that training's loss applies."""
        return probabilities(self.forward(model, x, batch_size), model.loss)

    def evaluate_indices(self, model, images, labels, mean=0.0, std=1.0, batch_size=256):
        """-> predicted class per sample of a resident uint8 set (on one device)."""
        self.resident_sets.check(model, images, labels)
        ex = self.executor(model, self.inference_device(), min(batch_size, len(images)))
        return self.resident_sets.predict(ex, images, labels, mean, std)

    def pause(self):  # the caller stopped stepping for a while (steps are timed start to start)
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

    # --- the step -----------------------------------------------------------------------------
    def step_on_devices(self, model, n, feed, split=None, defer=False, step=0):
        """One forward/loss/backward of n samples over the devices; feed(executor, a, b) puts
        samples a..b on the executor's device. defer: do not wait for the loss (StepResult
        reads it later). step: optimizer steps taken so far (dropout's counter).
        -> StepResult, the replicas (and slices) to update"""
        model.check_batch(n)
        started = time.perf_counter()
        self._time_step(split, started)
        offset, stop = self.world.shard(n) if self.world else (0, n)  # this rank's slice
        state = self.state(model)
        state.save_running()
        while True:  # a device that fails is removed and the step redone on the others
            plan = self._split(stop - offset, split)
            exchange = self._exchange if len(plan) > 1 or self.world else None
            if exchange:
                exchange.begin()
            measure = self._measuring(exchange, plan)
            message = state.choose_mode(self.parallel, len(plan), self.last_bytes)
            if message:
                self.messages.append(message)
            try:
                ctx = step_contexts(plan, n, offset, step, model.seed or 0, self.world, self.tracer)
                out = STRATEGIES[state.mode()](self, state, plan, n, feed, exchange, measure,
                                               offset, not defer or self.world is not None, ctx)
                break
            except StepFailed as failure:
                self._drop(failure, n)
                state.restore_running()
        self.last_bytes = out.bytes
        if self.world:
            loss, correct = self.world.sum(list(out.result.get()))
            out.result = StepResult(value=(loss, int(round(correct))))
        if out.times is not None and split is None:
            self.scheduler.record(self.last_split, *self._per_device(plan, out))
        self.tracer.phase("step", time.perf_counter() - started, measured=measure)
        return out.result, out.updated

    def _time_step(self, split, now):
        """The scheduler times whole steps, start to start, but not measured ones (they wait
        for every kernel's times: the first 20 steps' configuration would look slower)."""
        if split is None and len(self.devices) - len(self.failed) > 1:
            if self._step_started is not None:
                started, measured = self._step_started
                self.scheduler.end_step(None if measured else now - started)
            self._step_started = (now, False)

    def _measuring(self, exchange, plan):
        """Whether the scheduler measures this step (reading kernels' profiling times costs
        host time per event): every step at first, then every measure_every-th. Profiling is
        on only where measured (device.py; back on after the step: _profiling_restored)."""
        measure = exchange is not None and len(plan) > 1 and \
            (self.steps < 20 or self.steps % self.measure_every == 0)
        for device in self.devices:
            device.kernel_events = None  # (left on by a step that failed)
            device.profiling = measure
        if measure and self._step_started is not None:
            self._step_started = (self._step_started[0], True)
        return measure

    def _drop(self, failure, n):
        """Remove the device a step failed on (faults.py), or raise where none is left."""
        if self.world and failure.position is None:  # other ranks are inside the step's sums
            self.world.abort(f"OpenCL error while exchanging gradients: {failure.error}")
        alive = len(self.devices) - len(self.failed)
        faults.check_recoverable(self.devices, failure.position, failure.error, n, alive)
        self.failed.add(failure.position)
        self.scheduler.remove(failure.position, str(failure.error))
        faults.say_removed(self.devices[failure.position], failure.error)
        for i, d in enumerate(self.devices):  # let the others finish what they had queued
            if i not in self.failed:
                d.queue.finish()

    def inject_fault(self, device):
        faults.inject(device, self.steps + 1)

    def _per_device(self, plan, out):
        """The scheduler's inputs; an executor's first step (it built kernels) is left out."""
        compute, exchange = [None] * len(self.devices), [0.0] * len(self.devices)
        for (i, _, _), (_, ex), (c, x) in zip(plan, out.executors, out.times):
            if ex.steps > 1:
                compute[i], exchange[i] = c, x
        return compute, exchange

    def _numpy_feed(self, model, x, y):
        """-> n, feed(executor, a, b) for a step on a numpy batch: x as float32 and the model
        built for it, x and the labels y checked before any kernel runs (inputs.py)."""
        x = inputs.batch(model, x)
        inputs.check_labels(model, y, len(x))
        inputs.check_finite(x)
        y = np.asarray(y)
        return len(x), lambda ex, a, b: ex.set_input(x[a:b], y[a:b])

    def gradients(self, model, x, y, split=None):
        """(loss, {name: gradient}) of the batch, without changing the parameters (but batch
        norm's running statistics, as a training-mode forward does). split: as train_step's."""
        n, feed = self._numpy_feed(model, x, y)
        with self._profiling_restored():
            result, replicas = self.step_on_devices(model, n, feed, split)
            loss = result.get()[0]
        if model.running_names():  # (the step moved them on the devices)
            self.state(model).committed(replicas)
        hybrid = self.state(model).hybrid
        if hybrid:
            return loss, hybrid.gradients()
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
        """One step on a numpy batch (x already normalised); split: shard size per device
        (default: the scheduler's). -> loss [, correct count]"""
        return self._train(model, opt, *self._numpy_feed(model, x, y), return_correct, split=split)

    def train_step_indices(self, model, opt, images, labels, indices, mean=0.0, std=1.0,
                           return_correct=False, defer=False, augment=None, upcoming=None):
        """One SGD step on samples `indices` of a uint8 data set kept on every device (or
        streamed to it: resident_sets.py); the kernels normalise (x/255 - mean)/std while
        gathering, augmented where `augment` (resident_sets.Augment) says. defer=True returns
        a StepResult at once, without waiting for the step's loss: read it (get()) after
        enqueueing the next step, and the host prepares that step while the devices still
        compute this one - with several GPUs the host's enqueueing is the limit otherwise.
        upcoming: the coming steps' indices in order, where known (engine/chunks.py)."""
        self.resident_sets.check(model, images, labels)
        indices = inputs.indices(indices, len(images))
        feed = self.resident_sets.feed(images, labels, indices, mean, std, augment)
        out = self._train(model, opt, len(indices), feed, return_correct, defer=defer)
        self.resident_sets.plan(images, labels, upcoming)
        return out

    def _train(self, model, opt, n, feed, return_correct, split=None, defer=False):
        """The step and the update, with profiling back on after them (_profiling_restored).
        -> the StepResult where defer, else loss [, correct count]"""
        with self._profiling_restored():
            result, replicas = self.step_on_devices(model, n, feed, split, defer, opt.steps)
            self.apply_update(model, opt, replicas)
        if defer:
            return result
        loss, correct = result.get()
        return (loss, correct) if return_correct else loss

    def apply_update(self, model, opt, updated):
        """The optimizer's update on every replica (and slice) that took part in the step."""
        started = time.perf_counter()
        gscale = self.state(model).clip_scale(opt, updated) if opt.max_grad_norm else None
        for rep in updated:
            opt.apply(rep, gscale)
        opt.steps += 1
        self.steps += 1
        self.state(model).committed(updated)
        self.tracer.phase("update", time.perf_counter() - started)
