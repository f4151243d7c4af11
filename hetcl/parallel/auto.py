"""parallel="auto": time data and hybrid parallelism on a model's first steps, keep the faster.

A model's first AUTO_STEPS steps on several devices run data-parallel, the next AUTO_STEPS
hybrid - the same training either way, only the speed differs (the runtime hands weights and
momentum over) - then the faster by median step time is kept (the first AUTO_WARMUP steps of
each, which build kernels and cut the dense slices, are not timed) and the choice is logged
with both measurements and the bytes each moves per step. Measured rather than modelled: how
much of data parallelism's transfers hide behind the backward pass, and what hybrid's host round
trips cost, depend on the devices and the model (a byte count alone can pick hybrid where
data parallelism is clearly faster: docs/benchmarks.md, 'Hybrid parallelism').
"""
import time

import numpy as np

AUTO_STEPS, AUTO_WARMUP = 8, 3


class AutoTrial:
    def __init__(self):
        self.mode = "data"  # the mode being timed
        self.times = {"data": [], "hybrid": []}
        self.bytes = {}
        self._last = None

    def step(self, bytes_moved):
        """Called at the start of each step (bytes_moved: the last step's). -> None while the
        current mode keeps running, "hybrid" when it is hybrid's turn, or the final choice as
        (mode, message)."""
        now = time.perf_counter()
        if self._last is not None:
            self.times[self.mode].append(now - self._last)
        self._last = now
        if len(self.times[self.mode]) < AUTO_STEPS:
            return None
        self.bytes[self.mode] = bytes_moved
        if self.mode == "data":
            self.mode = "hybrid"
            return "hybrid"
        ms = {m: 1e3 * float(np.median(t[AUTO_WARMUP:])) for m, t in self.times.items()}
        best = min(ms, key=ms.get)
        return best, (f"parallel auto: {best} (median step over {AUTO_STEPS - AUTO_WARMUP} "
                      f"steps each: " + ", ".join(
                          f"{m} {ms[m]:.2f} ms moving {self.bytes[m] / 1e6:.1f} MB"
                          for m in ms) + ")")
