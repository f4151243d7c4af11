"""Measurements of a device: FP32 GEMM GFLOP/s (hetcl's own kernel) and host<->device GB/s.

Times come from OpenCL profiling events (device time, not Python time); each figure is the
median of several runs after a warm-up run.
"""
import statistics

import numpy as np

from .buffers import empty, to_device
from .codegen.gemm import Gemm
from .device import event_seconds
from .models import INPUT_SHAPES  # noqa: F401  (the tools import it from here)


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


def train_throughput(model_name, devices, batch_size=256, steps=20, warmup=None, seed=0,
                     world=None, parallel="data", adaptive=True, min_seconds=1.0):
    """Training images/s of a model on `devices` (a spec or a list), on random uint8 images
    resident on the devices, as in `hetcl train`. Wall-clock over `steps` steps after `warmup`
    (the warm-up builds the kernels and allocates every buffer; with several devices it lasts
    until the scheduler has settled its split - at least 30 steps - and built its kernels).
    world: an mpi.World; batch_size is then the global batch, split across the ranks.
    parallel, adaptive: as for runtime.Runtime. min_seconds: time more than `steps` steps until
    this long has passed (LeNet-5 steps on a GPU take under 1 ms: 20 of them are swung by
    any pause of the host); not with a world, whose ranks must all run the same steps.
    Afterwards train_throughput.last_split,
    .messages and .bytes (moved per step) describe the run."""
    import time

    from .models import build_model
    from .optim import SGD
    from .runtime import Runtime

    images, labels, batches = random_data(model_name, batch_size, 8, seed)
    model = build_model(model_name, INPUT_SHAPES[model_name], 10, seed)
    rt = Runtime(devices, world=world, parallel=parallel, adaptive=adaptive)
    opt = SGD(0.01, 0.9)

    in_flight = []  # as in `hetcl train`: a step's loss is read after the next one is enqueued

    def step(i):
        in_flight.append(rt.train_step_indices(model, opt, images, labels, batches[i % 8], 0.3,
                                               0.3, defer=True))
        if len(in_flight) > 1:
            in_flight.pop(0).get()

    if warmup is None and len(rt.devices) > 1:
        # Until the scheduler has settled: no trial running and the same split for 10 steps.
        same, i, last = 0, 0, None
        while i < 400 and (i < 30 or same < 10 or rt.scheduler.trial is not None):
            step(i)
            same = same + 1 if rt.last_split == last else 0
            last, i = list(rt.last_split), i + 1
        if i == 400:  # timed anyway, but said: the figure may include a trial or re-balancing
            rt.messages.append(f"bench: the scheduler had not settled after 400 warm-up steps "
                               f"(split {'/'.join(map(str, rt.last_split))}, trial "
                               f"{'running' if rt.scheduler.trial else 'none'})")
    else:
        for i in range(3 if warmup is None else warmup):
            step(i)
    for d in rt.devices:
        d.queue.finish()
    start, done = time.perf_counter(), 0
    while done < steps or (world is None and time.perf_counter() - start < min_seconds):
        step(done)
        done += 1
    for d in rt.devices:
        d.queue.finish()
    rate = done * batch_size / (time.perf_counter() - start)
    train_throughput.last_split = rt.last_split
    train_throughput.messages = list(rt.messages) + list(rt.scheduler.messages)
    train_throughput.bytes = rt.last_bytes
    train_throughput.modes = {name: "data" if h is None else "hybrid"
                              for name, h in rt._hybrid.items()}
    return rate


def alone_and_together(name, devices, modes, batch_size, steps, rounds, notes,
                       progress=lambda what: None):
    """Training images/s of model `name` on each device alone and on all of them together in
    each parallel mode, `rounds` times in alternation; every other round runs in reverse
    order, so that no configuration always follows the same other one (a CPU run at full
    load can leave the host's clock low for the next, and host-bound GPU steps feel that).
    The scheduler's messages are added to `notes`; progress(label) before each run.
    -> ({device index: [rate per round]}, {mode: [rate per round]},
        {mode: (last split, bytes moved a step)})"""
    alone = {dev.index: [] for dev in devices}
    together = {mode: [] for mode in modes}
    last = {}
    for r in range(rounds):
        tag = f" (round {r + 1}/{rounds})" if rounds > 1 else ""
        runs = [("alone", dev) for dev in devices] + [("together", mode) for mode in modes]
        for kind, what in runs if r % 2 == 0 else runs[::-1]:
            if kind == "alone":
                progress(f"{what.name}{tag}")
                alone[what.index].append(train_throughput(name, [what], batch_size, steps))
                continue
            progress(f"all {len(devices)} devices ({what}){tag}")
            together[what].append(train_throughput(name, devices, batch_size, steps,
                                                   parallel=what))
            notes.extend(train_throughput.messages)
            last[what] = (train_throughput.last_split, train_throughput.bytes)
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
