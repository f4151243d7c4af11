"""Sums that a training step needs in its middle (batch norm's per-channel sums, forward and
backward): each device's part is read back, the parts are added on the host in the step's
fixed device order (float64), across MPI ranks too, and the total is written back to every
device before its next kernel. Unlike the gradients' all-reduce (comm.py), nothing can overlap
it: the devices' next layers need the total. docs/benchmarks.md ("Batch norm") has its cost.

One BatchSums serves one step. Executors drive it from their step generators
(Executor._all_reduced): a device that brings its part before the others have theirs waits,
yielding to them (engine/executor.py: interleave); the last to arrive sums and releases all.
"""
import time

import numpy as np

from ..engine.executor import StepContext
from .trace import Tracer


class BatchSums:
    def __init__(self, parties, world=None, tracer=None):
        """parties: devices of this process in the step; world: the mpi.World, if any;
        tracer: receives each sum's host seconds as phase "batch sums" (trace.py)."""
        self.parties, self.world, self.tracer = parties, world, tracer or Tracer()
        self._parts = {}  # key -> {position: (device array, host copy, read event)}
        self._done = set()
        self._uploads = []  # (host arrays written back: alive until the step's end)

    def all_reduce(self, key, position, array):
        """A generator: contribute this device's `array` under `key`; it ends once `array`
        holds the sum over every party (and rank)."""
        host = np.empty(array.shape, np.float32)
        parts = self._parts.setdefault(key, {})
        parts[position] = (array, host, array.get_async(host))
        if len(parts) == self.parties:
            self._sum(key, parts)
        while key not in self._done:
            yield

    def _sum(self, key, parts):
        started = time.perf_counter()
        total = np.zeros(next(iter(parts.values()))[1].shape, np.float64)
        for position in sorted(parts):
            _, host, event = parts[position]
            event.wait()
            total += host
        if self.world is not None:
            total = self.world.sum_in_step(total, f"batch statistics {key}")
        total = total.astype(np.float32)
        self._uploads.append(total)
        for array, _, _ in parts.values():
            array.device.retire(array.set(total, wait=False))
        del self._parts[key]
        self._done.add(key)
        self.tracer.phase("batch sums", time.perf_counter() - started)


def step_contexts(plan, n, offset, step, seed, world, tracer=None):
    """{device position: StepContext} of a step split as `plan` [(position, a, b)] over this
    process's devices; offset: this rank's first sample in the global batch of n."""
    several = len(plan) > 1 or world is not None
    sums = BatchSums(len(plan), world, tracer) if several else None
    return {i: StepContext(n, offset + a, step, seed, sums, k)
            for k, (i, a, b) in enumerate(plan)}
