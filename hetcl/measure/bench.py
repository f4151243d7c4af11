"""Measurements of a device: FP32 GEMM GFLOP/s (hetcl's own kernel) and host<->device GB/s.

Times come from OpenCL profiling events (device time, not Python time); each figure is the
median of several runs after a warm-up run.
"""
import statistics
import time

import numpy as np

from ..backend.affinity import host_thread_pinned
from ..backend.buffers import empty, to_device
from ..backend.device import event_seconds
from ..codegen.gemm import Gemm
from ..engine.chunks import LOOKAHEAD_STEPS
from ..model.models import INPUT_SHAPES  # noqa: F401  (the tools import it from here)


def _waited_seconds(event):
    event.wait()
    return event_seconds(event)


def median_time(enqueue, repeats=5):
    _waited_seconds(enqueue())  # warm-up: first launch pays for lazy allocation and caches
    return statistics.median(_waited_seconds(enqueue()) for _ in range(repeats))


def gemm_size(device):
    """Big enough to reach the device's steady state, small enough to be quick on one core."""
    return 4096 if device.kind in ("dgpu", "igpu") else 1024


def bench_gemm(device, n=None, repeats=5):
    n = n or gemm_size(device)
    rng = np.random.default_rng(0)
    a = to_device(device, rng.standard_normal((n, n), dtype=np.float32))
    b = to_device(device, rng.standard_normal((n, n), dtype=np.float32))
    c = empty(device, (n, n))
    op = Gemm(device, n, n, n)
    return {"gemm_n": n, "gflops": op.flops() / median_time(lambda: op(a, b, c), repeats) / 1e9}


def bench_transfer(device, nbytes=64 << 20, repeats=5):
    host = np.ones(nbytes // 4, np.float32)
    dev = empty(device, host.shape)
    h2d = median_time(lambda: dev.set(host, wait=False), repeats)
    back = np.empty_like(host)
    d2h = median_time(lambda: dev.get_async(back), repeats)
    return {"h2d_gbs": nbytes / h2d / 1e9, "d2h_gbs": nbytes / d2h / 1e9}


def bench_device(device):
    return dict(bench_gemm(device), **bench_transfer(device))


def random_data(model_name, batch_size, count, seed=0):
    """Random uint8 images and labels for `count` batches of the model's input, and `count`
    batches of indices into them (int32): the data of the throughput benchmarks and tools."""
    rng = np.random.default_rng(seed)
    n = batch_size * count
    images = rng.integers(0, 256, (n,) + INPUT_SHAPES[model_name], dtype=np.uint8)
    labels = rng.integers(0, 10, n, dtype=np.uint8)
    batches = [rng.permutation(n)[:batch_size].astype(np.int32) for _ in range(count)]
    return images, labels, batches


class TrainLoop:
    """One configuration's training loop on random uint8 images resident on the devices, as in
    `hetcl train`: built and warmed up once (the warm-up builds the kernels and allocates every
    buffer; with several devices it lasts until the scheduler has settled its split - at least
    30 steps - and built its kernels), then timed in windows by rate(). Configurations
    compared in alternating windows see the same spells of a noisy host (a host-bound LeNet-5
    step on a GPU swings from one second to the next: docs/benchmarks.md, 'Several devices at
    once').
    world: an mpi.World; batch_size is then the global batch, split across the ranks.
    parallel, adaptive: as for runtime.Runtime; augment: a resident_sets.Augment or None;
    batches: how many batches of random images the data set holds (the steps cycle over them);
    lookahead: each step passes the coming steps' indices (upcoming), as `hetcl train` does."""

    def __init__(self, model_name, devices, batch_size=256, warmup=None, seed=0, world=None,
                 parallel="data", adaptive=True, augment=None, batches=8, lookahead=True):
        from ..model.models import build_model
        from ..model.optim import SGD
        from ..parallel.runtime import Runtime

        self.images, self.labels, self.batches = random_data(model_name, batch_size, batches,
                                                             seed)
        self.model = build_model(model_name, INPUT_SHAPES[model_name], 10, seed)
        self.rt = rt = Runtime(devices, world=world, parallel=parallel, adaptive=adaptive)
        self.opt, self.batch_size, self.world = SGD(0.01, 0.9), batch_size, world
        self.augment, self.lookahead = augment, lookahead
        # the batches in their cyclic order, long enough to slice any step's coming ones from
        self.cycle = self.batches * (2 + LOOKAHEAD_STEPS // len(self.batches))
        self.in_flight = []  # as in `hetcl train`: a step's loss is read after the next is enqueued
        if warmup is None and len(rt.devices) > 1:
            # Until the scheduler has settled: no trial running and the same split for 10 steps.
            same, i, last = 0, 0, None
            while i < 400 and (i < 30 or same < 10 or rt.scheduler.trial is not None):
                self.step(i)
                same = same + 1 if rt.last_split == last else 0
                last, i = list(rt.last_split), i + 1
            if i == 400:  # timed anyway, but said: the figure may include a trial or re-balancing
                rt.messages.append(f"bench: the scheduler had not settled after 400 warm-up "
                                   f"steps (split {'/'.join(map(str, rt.last_split))}, trial "
                                   f"{'running' if rt.scheduler.trial else 'none'})")
        else:
            for i in range(3 if warmup is None else warmup):
                self.step(i)

    def step(self, i):
        self.in_flight.append(self.rt.train_step_indices(
            self.model, self.opt, self.images, self.labels, self.batches[i % len(self.batches)],
            0.3, 0.3, defer=True, augment=self.augment,
            upcoming=self.upcoming(i)))
        if len(self.in_flight) > 1:
            self.in_flight.pop(0).get()

    def upcoming(self, i):
        """The indices of the steps after step i (None without lookahead)."""
        if not self.lookahead:
            return None
        at = i % len(self.batches) + 1
        return self.cycle[at:at + LOOKAHEAD_STEPS]

    def rate(self, steps=20, min_seconds=1.0):
        """Images/s by the wall clock over `steps` steps, more until min_seconds have passed
        (LeNet-5 steps on a GPU are so short that 20 of them are swung by any pause of the
        host); not with a world, whose ranks must all run the same steps. The host thread
        runs on one core while timed, as in `hetcl train` (affinity.py)."""
        with host_thread_pinned(self.rt.devices, self.world):
            for d in self.rt.devices:
                d.queue.finish()
            self.rt.pause()  # the time since the last window is not a step's time
            start, cpu, done = time.perf_counter(), time.thread_time(), 0
            while done < steps or (self.world is None and
                                   time.perf_counter() - start < min_seconds):
                self.step(done)
                done += 1
            for d in self.rt.devices:
                d.queue.finish()
            wall = time.perf_counter() - start
            cpu = time.thread_time() - cpu
        # The window's wall and host-thread CPU seconds per step (tools/profile_gap.py).
        self.last_window = (wall / done, cpu / done)
        return done * self.batch_size / wall

    @property
    def messages(self):
        return list(self.rt.messages) + list(self.rt.scheduler.messages)

    @property
    def modes(self):
        return self.rt.modes()


def train_throughput(model_name, devices, batch_size=256, steps=20, warmup=None, seed=0,
                     world=None, parallel="data", adaptive=True, min_seconds=1.0):
    """Training images/s of a model on `devices` (a spec or a list): one TrainLoop, warmed up
    and timed once. Afterwards train_throughput.last_split, .messages and .bytes (moved per
    step) describe the run."""
    loop = TrainLoop(model_name, devices, batch_size, warmup, seed, world, parallel, adaptive)
    rate = loop.rate(steps, min_seconds)
    train_throughput.last_split = loop.rt.last_split
    train_throughput.messages = loop.messages
    train_throughput.bytes = loop.rt.last_bytes
    train_throughput.modes = loop.modes
    return rate


def alone_and_together(name, devices, modes, batch_size, steps, rounds, notes,
                       progress=lambda what: None):
    """Training images/s of model `name` on each device alone and on all of them together in
    each parallel mode. Each configuration is built and warmed up once, then timed in
    `rounds` windows. The first round times them in turn and finds the best device alone;
    from the second on, the other devices run first and the best one and the together modes
    back to back, in reverse order every other round: the windows that a ratio compares are
    neighbours in time (a host's slow spells can last seconds: with another device's window
    between them, the ratios of LeNet-5 rounds spread far wider than side by side;
    docs/benchmarks.md, 'Several devices at once') and none always runs first. The
    scheduler's messages are added to `notes`; progress(label) before each warm-up and window.
    -> ({device index: [rate per round]}, {mode: [rate per round]},
        {mode: (last split, bytes moved a step)})"""
    runs = [("alone", dev) for dev in devices] + [("together", mode) for mode in modes]
    loops = {}
    for kind, what in runs:
        if kind == "alone":
            progress(f"warming up on {what.name}")
            loops[kind, what.index] = TrainLoop(name, [what], batch_size)
        else:
            progress(f"warming up on all {len(devices)} devices ({what})")
            loops[kind, what] = TrainLoop(name, devices, batch_size, parallel=what)
    alone = {dev.index: [] for dev in devices}
    together = {mode: [] for mode in modes}
    order = runs
    for r in range(rounds):
        tag = f" (round {r + 1}/{rounds})" if rounds > 1 else ""
        if r > 0:
            best = max(devices, key=lambda d: statistics.median(alone[d.index]))
            pair = [("alone", best)] + [("together", mode) for mode in modes]
            order = [run for run in runs if run not in pair] + (pair if r % 2 else pair[::-1])
        for kind, what in order:
            if kind == "alone":
                progress(f"timing {what.name}{tag}")
                alone[what.index].append(loops[kind, what.index].rate(steps))
            else:
                progress(f"timing all {len(devices)} devices ({what}){tag}")
                together[what].append(loops[kind, what].rate(steps))
    last = {}
    for mode in modes:
        loop = loops["together", mode]
        notes.extend(loop.messages)
        last[mode] = (loop.rt.last_split, loop.rt.last_bytes)
    return alone, together, last


def cpu_model():
    """The host CPU's model name (benchmarks print it beside their numbers)."""
    import platform
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"
