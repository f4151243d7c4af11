"""How one training step runs on the devices of a plan [(device position, a, b)]: a strategy
enqueues every device's part and returns an Outcome. contexts: each device's StepContext
(batch_sums.py: what batch norm and dropout need of the step). Runtime.step_on_devices picks the strategy
(the model's mode, model_state.py), times and records the step around it, and retries it when
a device fails.

data    every device runs the whole model on its shard; the gradients are summed per layer
        across devices (comm.py), overlapped with the backward pass
hybrid  the layers before the dense tail data-parallel, the dense tail model-parallel
        (hybrid.py); a device lost mid-step takes its slice of the dense layers with it, so a
        failure there ends the run with a message instead of a retry
"""
import dataclasses

import pyopencl as cl

from ..engine.executor import StepResult, interleave
from ..errors import DeviceFault, HetclError


class StepFailed(Exception):
    """A device failed during a data-parallel step: its position in the runtime's devices
    (None: in the gradient exchange, after every device's part was enqueued) and the error."""

    def __init__(self, position, error):
        super().__init__(str(error))
        self.position, self.error = position, error


@dataclasses.dataclass
class Outcome:
    result: StepResult  # the loss and correct count (read later when deferred)
    updated: list       # replicas (and hybrid slices) the optimizer updates
    executors: list     # [(device position, executor)] in plan order, for the scheduler
    times: list         # per device (busy seconds, exchange seconds) when measured, else None
    bytes: int          # bytes moved between the devices and the host


def data_parallel(rt, state, plan, n, feed, exchange, measure, offset, wait, contexts):
    runs, current = [], None

    def turn(k):  # which device an OpenCL error would come from
        nonlocal current
        current = runs[k][0]
    try:
        for i, a, b in plan:
            current = i
            rt.inject_fault(rt.devices[i])
            ex = state.executor(rt.devices[i], b - a)
            if measure:  # the scheduler's measure of the device: its kernels' busy time
                rt.devices[i].kernel_events = []
            feed(ex, offset + a, offset + b)
            runs.append((i, ex, ex.enqueue_step(n, exchange.reader(ex) if exchange else None,
                                                contexts[i])))
        dones = interleave([step for _, _, step in runs], turn)  # the loss results' reads
        result = StepResult([(rt.devices[i], done) for (i, _, _), done in zip(runs, dones)])
        if wait:
            for (i, _, _), done in zip(runs, dones):
                current = i
                done[0].wait()
            result.get()
        current = None
        times = exchange.reduce(rt.world, measure) if exchange else None
    except (cl.Error, DeviceFault) as e:
        raise StepFailed(current, e) from e
    return Outcome(result, [ex.replica for _, ex, _ in runs], [(i, ex) for i, ex, _ in runs],
                   times, exchange.bytes if exchange else 0)


def hybrid(rt, state, plan, n, feed, exchange, measure, offset, wait, contexts):
    try:
        for i, _, _ in plan:
            rt.inject_fault(rt.devices[i])
        loss, correct, updated, times = state.hybrid.step(plan, n, feed, exchange, measure,
                                                          contexts)
    except (cl.Error, DeviceFault) as e:
        raise HetclError(f"a device failed during a hybrid step ({e}); its slice of the "
                         f"dense layers is lost with it: resume from the last checkpoint "
                         f"with --parallel data to train on without it") from e
    executors = [(i, state.hybrid.executor(i, b - a)) for i, a, b in plan]
    return Outcome(StepResult(value=(loss, correct)), updated, executors, times,
                   state.hybrid.io.bytes)


STRATEGIES = {"data": data_parallel, "hybrid": hybrid}
