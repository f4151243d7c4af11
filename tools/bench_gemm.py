#!/usr/bin/env python3
"""Benchmark (not a test): hetcl's single-precision GEMM on each OpenCL device vs numpy.

Prints markdown: the CPU model, each device with its driver, then per square size and device
the hetcl and numpy GFLOP/s and their ratio, and the four transpose pairs at 1024. Kernel time is
taken from OpenCL profiling events, numpy's from the wall clock; both are the median of --reps
runs after a warm-up. Every timed result is checked against numpy (relative error < 1e-4).

    python tools/bench_gemm.py [--devices all] [--sizes 256,512,1024,2048] [--params MWG=..,NWG=..]

GPU mode (--cublas): for each problem of --problems (4096^3 in the four transpose pairs and the
GEMMs of the CIFAR CNN at batch 256) and each candidate parameter set of --candidates, the
kernel time (profiling events) against cuBLAS SGEMM through PyTorch (TF32 off; CUDA events),
each result checked against cuBLAS's; --json writes every measurement.

    python tools/bench_gemm.py --devices gpu --cublas [--candidates "default;db;MWG=128,..."]
"""
import argparse
import json
import os
import time

import numpy as np


from hetcl.backend.buffers import empty, to_device  # noqa: E402
from hetcl.codegen.gemm import Gemm, tuned_params  # noqa: E402
from hetcl.codegen.gemm import GemmParams  # noqa: E402
from hetcl.backend.device import select_devices  # noqa: E402
from hetcl.measure.bench import cpu_model, median_time  # noqa: E402

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
    seconds = median_time(lambda: op(a_dev, b_dev, c), reps)  # after a warm-up (and build)
    out = c.get()
    err = float(np.linalg.norm(out - ref) / max(np.linalg.norm(ref), 1e-30))
    return seconds, err, op.params


# (m, n, k, trans_a, trans_b, batch, what): 4096^3, then the CIFAR CNN (hetcl.model.models.cifar_cnn)
# at batch 256 as hetcl.engine.ops runs it: conv forward W @ col (NN), input gradient W^T @ dz (TN),
# weight gradient dz @ col^T as a split-K batched NT GEMM, dense forward (split-K NT), dense
# weight and input gradients (TN, NN).
PROBLEMS = {
    "square": [(4096, 4096, 4096, ta, tb, 1, "4096^3") for ta in (False, True)
               for tb in (False, True)],
    "cifar": [(64, 262144, 27, False, False, 1, "conv1 fwd"),
              (64, 262144, 576, False, False, 1, "conv2 fwd"),
              (576, 262144, 64, True, False, 1, "conv2 dcol"),
              (64, 576, 2240, False, True, 117, "conv2 dW (split-K)"),
              (128, 65536, 576, False, False, 1, "conv3 fwd"),
              (576, 65536, 128, True, False, 1, "conv3 dcol"),
              (128, 65536, 1152, False, False, 1, "conv4 fwd"),
              (1152, 65536, 128, True, False, 1, "conv4 dcol"),
              (128, 1152, 2259, False, True, 29, "conv4 dW (split-K)"),
              (256, 256, 256, False, True, 32, "dense1 fwd (split-K)"),
              (256, 8192, 256, True, False, 1, "dense1 dW"),
              (256, 8192, 256, False, False, 1, "dense1 dx")],
}


def problem_label(m, n, k, ta, tb, batch):
    return f"{'T' if ta else 'N'}{'T' if tb else 'N'} {m}x{n}x{k}" + (f" x{batch}" if batch > 1 else "")


def cuda_operands(torch, m, n, k, ta, tb, batch):
    """Seeded batched operands on the GPU: -> (a, b, op(a), op(b)), op being the transpose
    where asked (a view, so cuBLAS sees the same layout hetcl's kernel reads)."""
    gen = torch.Generator(device="cuda").manual_seed(0)
    a = torch.randn(batch, *((k, m) if ta else (m, k)), device="cuda", generator=gen)
    b = torch.randn(batch, *((n, k) if tb else (k, n)), device="cuda", generator=gen)
    return a, b, (a.transpose(1, 2) if ta else a), (b.transpose(1, 2) if tb else b)


def time_cublas(torch, x, y, out, reps):
    """Median ms of reps torch.bmm calls into out (CUDA events), after one untimed call."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    times = []
    for _ in range(reps + 1):
        start.record()
        torch.bmm(x, y, out=out)
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    return float(np.median(times[1:]))


def candidate_params(device, cand, m, n, k, ta, tb, batch):
    """'default' = GemmParams.for_shape, 'db' = the tuning DB's choice, else GemmParams text."""
    if cand == "default":
        return GemmParams.for_shape(device.features, m, n, k, ta, tb)
    if cand == "db":
        return tuned_params(device, m, n, k, ta, tb, batch)
    return parse_params(cand)


def time_candidate(device, problem, params, a_dev, b_dev, c, ref_np, reps):
    """One checked run of the candidate's kernel, then its median time: -> (ms, rel err)."""
    m, n, k, ta, tb, batch = problem
    op = Gemm(device, m, n, k, ta, tb, batch=batch, params=params)
    strides = dict(a_stride=m * k, b_stride=k * n, c_stride=m * n)
    c.fill(np.nan)
    op(a_dev, b_dev, c, **strides).wait()
    out = c.get()
    err = float(np.linalg.norm(out - ref_np) / max(np.linalg.norm(ref_np), 1e-30))
    ms = median_time(lambda: op(a_dev, b_dev, c, **strides), reps) * 1e3
    return ms, err


def compare_problem(torch, device, problem, what, candidates, reps):
    """cuBLAS, then every valid candidate on one problem; prints a table row per candidate and
    returns their dicts."""
    m, n, k, ta, tb, batch = problem
    a, b, x, y = cuda_operands(torch, m, n, k, ta, tb, batch)
    ref = torch.bmm(x, y)
    cublas_ms = time_cublas(torch, x, y, ref, reps)
    flops = 2.0 * m * n * k * batch
    ref_np = ref.cpu().numpy().reshape(batch * m, n)
    a_dev, b_dev = to_device(device, a.cpu().numpy()), to_device(device, b.cpu().numpy())
    c = empty(device, (batch * m, n))
    label = problem_label(m, n, k, ta, tb, batch)
    rows = []
    for cand in candidates:
        params = candidate_params(device, cand, m, n, k, ta, tb, batch)
        if not params.valid(device.features):
            continue
        ms, err = time_candidate(device, problem, params, a_dev, b_dev, c, ref_np, reps)
        check = "ok" if err < TOL else f"**FAIL** ({err:.1e})"
        row = dict(what=what, problem=[m, n, k, ta, tb, batch], candidate=cand,
                   params=params.as_dict(), ms=ms, cublas_ms=cublas_ms, err=err,
                   tflops=flops / ms * 1e-9, cublas_tflops=flops / cublas_ms * 1e-9)
        rows.append(row)
        print(f"| {what} | {label} | {cand if cand in ('default', 'db') else params} "
              f"| {ms:.4f} | {row['tflops']:.2f} | {row['cublas_tflops']:.2f} "
              f"| {cublas_ms / ms:.2f} | {check} |", flush=True)
    return rows


def compare_cublas(device, problems, candidates, reps, log):
    """Per problem: cuBLAS, then every candidate ('default' = GemmParams.for_shape, 'db' = the
    tuning DB's choice, else GemmParams). Prints a markdown table; returns a list of dicts
    (also appended to log)."""
    import torch
    torch.backends.cuda.matmul.allow_tf32 = False
    results = []
    print("| problem | GEMM | params | ms | TFLOP/s | cuBLAS TFLOP/s | hetcl/cuBLAS | check |")
    print("|---|---|---|---:|---:|---:|---:|---|")
    for m, n, k, ta, tb, batch, what in problems:
        rows = compare_problem(torch, device, (m, n, k, ta, tb, batch), what, candidates, reps)
        results += rows
        log += rows
    return results


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", default="all", help="all, cpu, gpu, 0,2, P:D ... (hetcl devices)")
    ap.add_argument("--sizes", default="256,512,1024,2048", help="square NN sizes, comma separated")
    ap.add_argument("--trans-size", type=int, default=1024, help="size of the transpose table")
    ap.add_argument("--params", default="", help="GemmParams, e.g. MWG=128,NWG=32,KWG=128,... "
                                                 "(default: the device's defaults)")
    ap.add_argument("--reps", type=int, default=5, help="timed runs per point (median)")
    ap.add_argument("--cublas", action="store_true", help="GPU mode: problems x candidates vs "
                                                          "cuBLAS (needs PyTorch with CUDA)")
    ap.add_argument("--problems", default="square,cifar", help="GPU mode: sets of PROBLEMS")
    ap.add_argument("--candidates", default="default;db", help="GPU mode: ';'-separated: "
                    "default, db, or GemmParams like MWG=128,NWG=128,...")
    ap.add_argument("--json", default="", help="GPU mode: write the measurements here")
    return ap.parse_args(argv)


def run_cublas(devices, args):
    """GPU mode: every device against cuBLAS; the measurements go to --json if given."""
    log = []
    candidates = [c.strip() for c in args.candidates.split(";") if c.strip()]
    for d in devices:
        print(f"device {d.index}: {d.name}, driver {d.profile['driver_version']}\n")
        problems = [p for name in args.problems.split(",") for p in PROBLEMS[name]]
        compare_cublas(d, problems, candidates, args.reps, log)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(log, f, indent=1)


def print_setup(devices, params):
    print(f"CPU: {cpu_model()} ({os.cpu_count()} logical cores); numpy {np.__version__}\n")
    for d in devices:
        p = params or GemmParams.defaults(d.features)
        print(f"- device {d.index}: {d.name} [{d.kind}], driver {d.profile['driver_version']}, "
              f"params {p}")
    print()


def numpy_table(title, points, devices, params, reps):
    """One markdown table: per (n, trans_a, trans_b) point, numpy then each device."""
    print(f"### {title}\n")
    print("| size | op | device | hetcl GFLOP/s | numpy GFLOP/s | hetcl/numpy | check |")
    print("|---:|:---:|---|---:|---:|---:|---|")
    for n, ta, tb in points:
        a, b, ref = operands(n, ta, tb)
        flops = 2.0 * n ** 3
        np_gflops = flops / time_numpy(a, b, ta, tb, reps) / 1e9
        label = ("T" if ta else "N") + ("T" if tb else "N")
        for d in devices:
            seconds, err, _ = time_hetcl(d, a, b, ref, ta, tb, params, reps)
            gflops = flops / seconds / 1e9
            check = "ok" if err < TOL else f"**FAIL** (rel err {err:.1e})"
            print(f"| {n} | {label} | {d.index}: {d.name} | {gflops:.1f} | {np_gflops:.1f} "
                  f"| {gflops / np_gflops:.2f} | {check} |", flush=True)
    print()


def main(argv=None):
    args = parse_args(argv)
    devices = select_devices(args.devices)
    if args.cublas:
        run_cublas(devices, args)
        return
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    params = parse_params(args.params)
    print_setup(devices, params)
    numpy_table("Square sizes, C = A B", [(n, False, False) for n in sizes], devices, params,
                args.reps)
    t = args.trans_size
    numpy_table(f"Transposes at {t}: C = op(A) op(B)",
                [(t, ta, tb) for ta in (False, True) for tb in (False, True)], devices, params,
                args.reps)


if __name__ == "__main__":
    main()
