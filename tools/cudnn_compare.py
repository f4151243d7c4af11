#!/usr/bin/env python3
"""hetcl (OpenCL) against cuDNN/cuBLAS (through PyTorch) on the same NVIDIA GPU.

    python tools/cudnn_compare.py [--device dgpu] [--batch 256] [--gemm-sizes 256,...,8192]
                                  [--out cmp.md] [--png cudnn_compare.png] [--iters 20 --reps 5]

Three markdown sections: every Conv2D/Dense layer of lenet5 and cifar-cnn (forward, backward-data,
backward-filter, with the fused activation; same inputs and weights on both sides, results
checked to a relative error < 1e-4), a square GEMM sweep, and a whole training step. Ratios are
hetcl time / cuDNN time (lower is better for hetcl). The fair cuDNN column is FP32 with TF32 off;
TF32-on is an extra column. Without CUDA or an NVIDIA OpenCL GPU it says which and exits 0.
"""
import argparse
import statistics
import subprocess
import sys
import time

import numpy as np


TOL = 1e-4
MODELS = ("lenet5", "cifar-cnn")


def rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))


def find_missing(spec):
    """-> (OpenCL Device or None, list of missing pieces)."""
    missing, device = [], None
    try:
        import torch
        if not torch.cuda.is_available():
            missing.append("CUDA (torch.cuda.is_available() is False)")
    except ImportError:
        missing.append("PyTorch")
    try:
        from hetcl.device import select_devices
        from hetcl.errors import HetclError
        try:
            nv = [d for d in select_devices(spec) if "NVIDIA" in d.profile["platform"].upper()]
        except HetclError as e:
            nv = []
            missing.append(f"an NVIDIA OpenCL GPU ({e})")
        else:
            if nv:
                device = nv[0]
            else:
                missing.append(f"an NVIDIA OpenCL GPU (no device matching {spec!r} is on an "
                               f"NVIDIA platform)")
    except ImportError as e:
        missing.append(f"OpenCL ({e})")
    return device, missing


def set_tf32(torch, on):
    torch.backends.cuda.matmul.allow_tf32 = on
    torch.backends.cudnn.allow_tf32 = on


def cl_time(device, fn, iters, reps):
    """Median over reps of wall time per call, queue drained before and after each rep."""
    for _ in range(2):
        fn()
    times = []
    for _ in range(reps):
        device.queue.finish()
        t0 = time.perf_counter()
        for _ in range(iters):
            fn()
        device.queue.finish()
        times.append((time.perf_counter() - t0) / iters)
    return statistics.median(times)


def cuda_time(torch, fn, iters, reps):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iters):
            fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) * 1e-3 / iters)
    return statistics.median(times)


def hetcl_layer(device, node, x, w, b, dy, iters, reps):
    """-> (y, dx, dw, db), (fwd, bwd_data, bwd_filter) seconds. The backward runs after a
    forward, as in training (a one-chunk conv reuses the forward's im2col columns), so each
    backward time is a difference of loops: (fwd+bwd_filter) - fwd and (fwd+full) -
    (fwd+bwd_filter)."""
    from hetcl.buffers import empty, to_device
    op = node.layer.bind(device, x.shape[0], act=node.act)
    xs, dyd = [to_device(device, x)], to_device(device, dy)
    p = {"weight": to_device(device, w), "bias": to_device(device, b)}
    y, dx = empty(device, dy.shape), empty(device, x.shape)
    g = {"weight": empty(device, w.shape), "bias": empty(device, b.shape)}

    fwd = lambda: op.forward(xs, y, p)  # noqa: E731
    fwd_filter = lambda: (fwd(), op.backward(xs, y, dyd, [None], p, g))  # noqa: E731
    fwd_full = lambda: (fwd(), op.backward(xs, y, dyd, [dx], p, g))  # noqa: E731
    fwd_full()
    out = (y.get(), dx.get(), g["weight"].get(), g["bias"].get())
    t_f, t_ff, t_fb = (cl_time(device, f, iters, reps) for f in (fwd, fwd_filter, fwd_full))
    return out, (t_f, t_fb - t_ff, t_ff - t_f)


def torch_layer(torch, layer, act, x, w, b, dy, tf32, iters, reps):
    """Same layer through cuDNN/cuBLAS: -> (y, dx, dw, db), (fwd, bwd_data, bwd_filter) s.
    Backward-filter includes the activation derivative and the bias gradient, as hetcl's."""
    F, aten = torch.nn.functional, torch.ops.aten
    set_tf32(torch, tf32)
    X, W, B, DY = (torch.from_numpy(a).cuda() for a in (x, w, b, dy))
    act_f = {"none": lambda z: z, "relu": F.relu, "sigmoid": torch.sigmoid}[act]
    dz_f = {"none": lambda: DY, "relu": lambda: aten.threshold_backward(DY, Y, 0),
            "sigmoid": lambda: aten.sigmoid_backward(DY, Y)}[act]
    if layer.kind == "conv":
        geo = (list(layer.stride), list(layer.padding), [1, 1], False, [0, 0], 1)

        fwd = lambda: act_f(F.conv2d(X, W, B, layer.stride, layer.padding))  # noqa: E731
        filt = lambda: aten.convolution_backward(  # noqa: E731
            dz_f(), X, W, [W.shape[0]], *geo, [False, True, True])[1:]
        data = lambda: aten.convolution_backward(  # noqa: E731
            DZ, X, W, None, *geo, [True, False, False])[0]
    else:
        fwd = lambda: act_f(F.linear(X, W, B))  # noqa: E731
        filt = lambda: (lambda dz: (dz.t() @ X, dz.sum(0)))(dz_f())  # noqa: E731
        data = lambda: DZ @ W  # noqa: E731
    Y = fwd()
    DZ = dz_f()
    dw, db = filt()
    out = tuple(t.cpu().numpy() for t in (Y, data(), dw, db))
    times = tuple(cuda_time(torch, f, iters, reps) for f in (fwd, data, filt))
    set_tf32(torch, False)
    return out, times


def layer_rows(torch, device, args):
    from hetcl.layers import Conv2D, Dense
    from hetcl.models import cifar_cnn, lenet5
    rows, rng = [], np.random.default_rng(0)
    for name, make in (("lenet5", lenet5), ("cifar-cnn", cifar_cnn)):
        model = make(seed=0).build()
        params = model.parameters()
        for node in model.nodes[1:]:
            layer = node.layer
            if not isinstance(layer, (Conv2D, Dense)):
                continue
            n = args.batch
            x = rng.standard_normal((n,) + tuple(layer.input_shape)).astype(np.float32)
            w = params[f"{layer.name}.weight"]
            b = (0.1 * rng.standard_normal(w.shape[0])).astype(np.float32)  # init bias is 0
            dy = rng.standard_normal((n,) + tuple(layer.output_shape)).astype(np.float32)
            ours, t_h = hetcl_layer(device, node, x, w, b, dy, args.iters, args.reps)
            ref, t_c = torch_layer(torch, layer, node.act, x, w, b, dy, False, args.iters,
                                   args.reps)
            _, t_tf = torch_layer(torch, layer, node.act, x, w, b, dy, True, args.iters,
                                  args.reps)
            errs = [rel(o, r) for o, r in zip(ours, ref)]
            rows.append(dict(model=name, layer=layer.name, kind=layer.kind, act=node.act,
                             shape=f"{'x'.join(map(str, x.shape))} → "
                                   f"{'x'.join(map(str, layer.output_shape))}",
                             hetcl=t_h, cudnn=t_c, tf32=t_tf, errs=errs))
            print(f"  {name} {layer.name}: done", file=sys.stderr, flush=True)
    return rows


def gemm_rows(torch, device, sizes, reps):
    from hetcl.bench import median_time
    from hetcl.buffers import empty, to_device
    from hetcl.codegen.gemm import Gemm
    rows = []
    for n in sizes:
        rng = np.random.default_rng(n)
        a, b = (rng.standard_normal((n, n), dtype=np.float32) for _ in range(2))
        op = Gemm(device, n, n, n)
        ad, bd, cd = to_device(device, a), to_device(device, b), empty(device, (n, n))
        seconds = median_time(lambda: op(ad, bd, cd), reps)  # after a warm-up
        A, B = torch.from_numpy(a).cuda(), torch.from_numpy(b).cuda()
        t_tc = {}
        for tf32 in (False, True):
            set_tf32(torch, tf32)
            t_tc[tf32] = cuda_time(torch, lambda: torch.mm(A, B), 3, reps)
        set_tf32(torch, False)
        err = rel(cd.get(), torch.mm(A, B).cpu().numpy()) if n == 1024 else None
        flops = 2.0 * n ** 3
        rows.append(dict(n=n, hetcl=flops / seconds / 1e9,
                         fp32=flops / t_tc[False] / 1e9, tf32=flops / t_tc[True] / 1e9, err=err))
        print(f"  gemm {n}: done", file=sys.stderr, flush=True)
    return rows


def torch_train(torch, name, batch, steps, tf32):
    from bench_train import torch_step_rate
    set_tf32(torch, tf32)
    try:
        return torch_step_rate(torch, name, batch, steps, "cuda", warmup=5)
    finally:
        set_tf32(torch, False)


def geomean(values):
    return float(np.exp(np.mean(np.log(values))))


def report(torch, device, args, layers, gemms, trains):
    try:
        drv = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout.split()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        drv = "unknown"
    us = lambda s: f"{s * 1e6:.1f}"  # noqa: E731
    L = ["# hetcl (OpenCL) vs cuDNN/cuBLAS (PyTorch)", "",
         f"- GPU: {torch.cuda.get_device_name()}; NVIDIA driver {drv}",
         f"- PyTorch {torch.__version__}, CUDA {torch.version.cuda}, "
         f"cuDNN {torch.backends.cudnn.version()} (cudnn.benchmark=True)",
         f"- OpenCL: {device.name} on {device.profile['platform']}, driver "
         f"{device.profile['driver_version']} ({device.profile['device_version']})",
         f"- command: `{' '.join(sys.argv)}`", ""]
    L += [f"## Layers (batch {args.batch}; µs per call; ratio = hetcl / cuDNN FP32)", "",
          "| model | layer | shape | act | fwd hetcl | fwd cuDNN | ratio | bwd-data hetcl "
          "| bwd-data cuDNN | ratio | bwd-filter hetcl | bwd-filter cuDNN | ratio | total ratio "
          "| cuDNN TF32 total | rel err y / dx / dW / db |",
          "|---|---|---|---|" + "---:|" * 11 + "---|"]
    for r in layers:
        h, c = r["hetcl"], r["cudnn"]
        cells = [f"{us(h[i])} | {us(c[i])} | {h[i] / c[i]:.2f}" for i in range(3)]
        bad = any(e >= TOL for e in r["errs"])
        errs = " / ".join(f"{e:.1e}" for e in r["errs"]) + (" **FAIL**" if bad else "")
        L.append(f"| {r['model']} | {r['layer']} | {r['shape']} | {r['act']} | "
                 + " | ".join(cells) + f" | {sum(h) / sum(c):.2f} | {us(sum(r['tf32']))} "
                 f"| {errs} |")
    for name in MODELS:
        convs = [sum(r["hetcl"]) / sum(r["cudnn"]) for r in layers
                 if r["model"] == name and r["kind"] == "conv"]
        if convs:
            L.append(f"\nGeometric mean of the conv layers' (fwd+bwd) ratios, {name}: "
                     f"**{geomean(convs):.2f}**")
    L += ["", "Notes: hetcl times are wall time per call over a loop between "
          "`queue.finish()`s (median of reps). Backward-filter = `op.backward(dxs=[None])` (bias "
          "+ weight gradient, with the activation derivative); backward-data = full backward "
          "minus backward-filter. Both backward times are taken after a forward, as in training "
          "(differences of fwd, fwd+bwd-filter and fwd+full loops). cuDNN times are "
          "torch.cuda.Event times; its backward-filter also includes the activation derivative "
          "and bias gradient (aten.convolution_backward / matmul). Errors are against cuDNN FP32; "
          f"tolerance {TOL:g}.", ""]
    L += ["## GEMM, square C = A B (GFLOP/s; ratio = hetcl time / cuBLAS FP32 time)", "",
          "| n | hetcl | cuBLAS FP32 | hetcl time / cuBLAS time | cuBLAS TF32 | check |",
          "|---:|---:|---:|---:|---:|---|"]
    for r in gemms:
        check = "" if r["err"] is None else ("ok" if r["err"] < TOL else "**FAIL**") \
            + f" (rel err {r['err']:.1e})"
        L.append(f"| {r['n']} | {r['hetcl']:.0f} | {r['fp32']:.0f} | {r['fp32'] / r['hetcl']:.2f} "
                 f"| {r['tf32']:.0f} | {check} |")
    L += ["", "hetcl: OpenCL profiling events; cuBLAS: torch.mm, torch.cuda.Event; medians.", "",
          f"## Training step (batch {args.batch}, {args.steps} steps after warm-up; images/s)", "",
          "| model | hetcl | PyTorch FP32 | hetcl time / PyTorch time | PyTorch TF32 |",
          "|---|---:|---:|---:|---:|"]
    for name, (ours, fp32, tf32) in trains.items():
        L.append(f"| {name} | {ours:.0f} | {fp32:.0f} | {fp32 / ours:.2f} | {tf32:.0f} |")
    L += ["", "hetcl: hetcl.bench.train_throughput (uint8 images resident on the device, "
          "gathered each step); PyTorch: eager, SGD momentum, CrossEntropyLoss, random data "
          "already on the GPU.", ""]
    return "\n".join(L)


def plot(layers, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        import matplotlib.ticker  # noqa: F401
    except ImportError:
        print("matplotlib not installed: no PNG", file=sys.stderr)
        return
    labels = [f"{r['model']}\n{r['layer']}" for r in layers]
    xs = np.arange(len(layers))
    fig, ax = plt.subplots(figsize=(max(6, 1.1 * len(layers)), 4.5))
    for i, what in enumerate(("fwd", "bwd-data", "bwd-filter")):
        ax.bar(xs + (i - 1) * 0.27, [r["hetcl"][i] / r["cudnn"][i] for r in layers], 0.27,
               label=what)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
    ax.yaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(  # label 2x and 5x only
        lambda v, _: f"{v:g}" if f"{v:.0e}"[0] in "25" else ""))
    ax.set_xticks(xs, labels, fontsize=8)
    ax.set_ylabel("hetcl time / cuDNN FP32 time")
    ax.set_title("hetcl (OpenCL) vs cuDNN per layer (lower is better for hetcl)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="dgpu", help="OpenCL device spec (first NVIDIA match)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--gemm-sizes", default="256,512,1024,2048,4096,8192")
    ap.add_argument("--iters", type=int, default=30, help="calls per timed loop")
    ap.add_argument("--reps", type=int, default=5, help="timed loops per point (median)")
    ap.add_argument("--steps", type=int, default=20, help="timed training steps")
    ap.add_argument("--out", default=None, help="markdown file (default: stdout only)")
    ap.add_argument("--png", default="cudnn_compare.png")
    args = ap.parse_args()
    device, missing = find_missing(args.device)
    if missing:
        print(f"cudnn_compare: skipped, missing {' and '.join(missing)}")
        return 0
    import torch
    from hetcl.bench import train_throughput
    np.seterr(all="ignore")
    torch.backends.cudnn.benchmark = True
    set_tf32(torch, False)
    layers = layer_rows(torch, device, args)
    gemms = gemm_rows(torch, device, [int(s) for s in args.gemm_sizes.split(",") if s], args.reps)
    trains = {}
    for name in MODELS:
        ours = train_throughput(name, [device], args.batch, args.steps)
        trains[name] = (ours, torch_train(torch, name, args.batch, args.steps, False),
                        torch_train(torch, name, args.batch, args.steps, True))
    text = report(torch, device, args, layers, gemms, trains)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    plot(layers, args.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
