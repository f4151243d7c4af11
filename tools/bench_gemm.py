#!/usr/bin/env python3
"""Benchmark (not a test): hetcl's single-precision GEMM on each OpenCL device vs numpy.

Prints markdown: the CPU model, each device with its driver, then per square size and device
the hetcl and numpy GFLOP/s and their ratio, and the four transpose pairs at 1024. Kernel time is
taken from OpenCL profiling events, numpy's from the wall clock; both are the median of --reps
runs after a warm-up. Every timed result is checked against numpy (relative error < 1e-4).

    python tools/bench_gemm.py [--devices all] [--sizes 256,512,1024,2048] [--params MWG=..,NWG=..]
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hetcl.buffers import empty, to_device  # noqa: E402
from hetcl.codegen.gemm import Gemm  # noqa: E402
from hetcl.codegen.params import GemmParams  # noqa: E402
from hetcl.device import select_devices  # noqa: E402
from hetcl.bench import cpu_model  # noqa: E402

TOL = 1e-4


def parse_params(text):
    if not text:
        return None
    fields = {}
    for item in text.split(","):
        key, _, value = item.partition("=")
        fields[key.strip()] = int(value)
    return GemmParams(**fields)


def operands(n, ta, tb, seed=0):
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((n, n)).astype(np.float32)
    b = rng.standard_normal((n, n)).astype(np.float32)
    ref = (a.T if ta else a) @ (b.T if tb else b)
    return a, b, ref


def time_numpy(a, b, ta, tb, reps):
    x, y = (a.T if ta else a), (b.T if tb else b)
    x @ y  # warm-up
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        x @ y
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def time_hetcl(device, a, b, ref, ta, tb, params, reps):
    n = a.shape[0]
    op = Gemm(device, n, n, n, ta, tb, params=params)
    a_dev, b_dev = to_device(device, a), to_device(device, b)
    c = empty(device, (n, n)).fill(np.nan)
    op(a_dev, b_dev, c).wait()  # warm-up (and build)
    times = []
    for _ in range(reps):
        event = op(a_dev, b_dev, c)
        event.wait()
        times.append((event.profile.end - event.profile.start) * 1e-9)
    out = c.get()
    err = float(np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-30))
    return float(np.median(times)), err, op.params


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", default="all", help="all, cpu, gpu, 0,2, P:D ... (hetcl devices)")
    ap.add_argument("--sizes", default="256,512,1024,2048", help="square NN sizes, comma separated")
    ap.add_argument("--trans-size", type=int, default=1024, help="size of the transpose table")
    ap.add_argument("--params", default="", help="GemmParams, e.g. MWG=128,NWG=32,KWG=128,... "
                                                 "(default: the device's defaults)")
    ap.add_argument("--reps", type=int, default=5, help="timed runs per point (median)")
    args = ap.parse_args(argv)
    devices = select_devices(args.devices)
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    params = parse_params(args.params)

    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical cores); numpy {np.__version__}\n")
    for d in devices:
        p = params or GemmParams.defaults(d.features)
        print(f"- device {d.index}: {d.name} [{d.kind}], driver {d.profile['driver_version']}, "
              f"params {p}")
    print()

    def table(title, points):
        print(f"### {title}\n")
        print("| size | op | device | hetcl GFLOP/s | numpy GFLOP/s | hetcl/numpy | check |")
        print("|---:|:---:|---|---:|---:|---:|---|")
        for n, ta, tb in points:
            a, b, ref = operands(n, ta, tb)
            flops = 2.0 * n ** 3
            np_gflops = flops / time_numpy(a, b, ta, tb, args.reps) / 1e9
            label = ("T" if ta else "N") + ("T" if tb else "N")
            for d in devices:
                seconds, err, _ = time_hetcl(d, a, b, ref, ta, tb, params, args.reps)
                gflops = flops / seconds / 1e9
                check = "ok" if err < TOL else f"**FAIL** (rel err {err:.1e})"
                print(f"| {n} | {label} | {d.index}: {d.name} | {gflops:.1f} | {np_gflops:.1f} "
                      f"| {gflops / np_gflops:.2f} | {check} |", flush=True)
        print()

    table("Square sizes, C = A B", [(n, False, False) for n in sizes])
    t = args.trans_size
    table(f"Transposes at {t}: C = op(A) op(B)",
          [(t, ta, tb) for ta in (False, True) for tb in (False, True)])


if __name__ == "__main__":
    main()
