"""Measurements of a device: FP32 GEMM GFLOP/s (hetcl's own kernel) and host<->device GB/s.

Times come from OpenCL profiling events (device time, not Python time); each figure is the
median of several runs after a warm-up run.
"""
import statistics

import numpy as np

from .buffers import empty, to_device
from .codegen.gemm import Gemm


def event_seconds(event):
    event.wait()
    return (event.profile.end - event.profile.start) * 1e-9


def median_time(enqueue, repeats=5):
    event_seconds(enqueue())  # warm-up: first launch pays for lazy allocation and caches
    return statistics.median(event_seconds(enqueue()) for _ in range(repeats))


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
