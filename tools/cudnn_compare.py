#!/usr/bin/env python3
"""hetcl (OpenCL) against cuDNN/cuBLAS (through PyTorch) on the same NVIDIA GPU.

    python tools/cudnn_compare.py [--device dgpu] [--batch 256] [--gemm-sizes 256,...,8192]
                                  [--models lenet5,cifar-cnn,resnet20] [--out cmp.md]
                                  [--png cudnn_compare.png] [--iters 20 --reps 5]

Four markdown sections: every Conv2D/Dense layer of the --models (distinct shapes; forward,
backward-data, backward-filter, with the fused activation; same inputs and weights on both
sides, results checked to a relative error < 1e-4), their BatchNorm2D layers (tools/cudnn_bn.py:
training forward and backward, evaluation forward), a square GEMM sweep, and each model's whole
training step (`--gemm-sizes ""` leaves the sweep out). Ratios are hetcl time / cuDNN time
(lower is better for hetcl). The fair cuDNN column is FP32 with TF32 off; TF32-on is an extra
column. Without CUDA or an NVIDIA OpenCL GPU it says which and exits 0.
"""
import argparse
import statistics
import sys
import time

import numpy as np

from cudnn_report import MODELS, plot, report


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
        from hetcl.backend.device import select_devices
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
    """-> (y, dx, dw, db), (fwd, bwd_data, bwd_filter) seconds (b None: a conv without bias,
    db None). The backward runs after a forward, as in training (a one-chunk conv reuses the
    forward's im2col columns), so each backward time is a difference of loops:
    (fwd+bwd_filter) - fwd and (fwd+full) - (fwd+bwd_filter)."""
    from hetcl.backend.buffers import empty, to_device
    op = node.layer.bind(device, x.shape[0], act=node.act)
    xs, dyd = [to_device(device, x)], to_device(device, dy)
    p, g = {"weight": to_device(device, w)}, {"weight": empty(device, w.shape)}
    if b is not None:
        p["bias"], g["bias"] = to_device(device, b), empty(device, b.shape)
    y, dx = empty(device, dy.shape), empty(device, x.shape)

    fwd = lambda: op.forward(xs, y, p)  # noqa: E731
    fwd_filter = lambda: (fwd(), op.backward(xs, y, dyd, [None], p, g))  # noqa: E731
    fwd_full = lambda: (fwd(), op.backward(xs, y, dyd, [dx], p, g))  # noqa: E731
    fwd_full()
    out = (y.get(), dx.get(), g["weight"].get(), g["bias"].get() if b is not None else None)
    t_f, t_ff, t_fb = (cl_time(device, f, iters, reps) for f in (fwd, fwd_filter, fwd_full))
    return out, (t_f, t_fb - t_ff, t_ff - t_f)


def torch_layer_fns(torch, layer, act, X, W, B, DY):
    """-> (fwd, bwd_data, bwd_filter) closures of the layer through PyTorch on X's device (B None:
    no bias) and the outputs (y, dx, dw, db) as numpy arrays (db None without a bias)."""
    F, aten = torch.nn.functional, torch.ops.aten
    act_f = {"none": lambda z: z, "relu": F.relu, "sigmoid": torch.sigmoid}[act]
    dz_f = {"none": lambda: DY, "relu": lambda: aten.threshold_backward(DY, Y, 0),
            "sigmoid": lambda: aten.sigmoid_backward(DY, Y)}[act]
    if layer.kind == "conv":
        geo = (list(layer.stride), list(layer.padding), [1, 1], False, [0, 0], 1)
        bias_sizes = None if B is None else [W.shape[0]]

        fwd = lambda: act_f(F.conv2d(X, W, B, layer.stride, layer.padding))  # noqa: E731
        filt = lambda: aten.convolution_backward(  # noqa: E731
            dz_f(), X, W, bias_sizes, *geo, [False, True, B is not None])[1:]
        data = lambda: aten.convolution_backward(  # noqa: E731
            DZ, X, W, None, *geo, [True, False, False])[0]
    else:
        fwd = lambda: act_f(F.linear(X, W, B))  # noqa: E731
        filt = lambda: (lambda dz: (dz.t() @ X, dz.sum(0)))(dz_f())  # noqa: E731
        data = lambda: DZ @ W  # noqa: E731
    Y = fwd()
    DZ = dz_f()
    dw, db = filt()
    out = tuple(None if t is None else t.cpu().numpy() for t in (Y, data(), dw, db))
    return (fwd, data, filt), out


def torch_layer(torch, layer, act, x, w, b, dy, tf32, iters, reps):
    """Same layer through cuDNN/cuBLAS: -> (y, dx, dw, db), (fwd, bwd_data, bwd_filter) s.
    Backward-filter includes the activation derivative and the bias gradient, as hetcl's."""
    set_tf32(torch, tf32)
    X, W, DY = (torch.from_numpy(a).cuda() for a in (x, w, dy))
    B = None if b is None else torch.from_numpy(b).cuda()
    fns, out = torch_layer_fns(torch, layer, act, X, W, B, DY)
    times = tuple(cuda_time(torch, f, iters, reps) for f in fns)
    set_tf32(torch, False)
    return out, times


def distinct_nodes(model, kinds):
    """[(node, count)] of the model's layers of these classes, one per distinct (layer, input
    shape, fused activation) in the order of first appearance (resnet20 repeats shapes)."""
    seen = {}
    for node in model.nodes[1:]:
        layer = node.layer
        if isinstance(layer, kinds):
            key = (type(layer), repr(layer), tuple(layer.input_shape), node.act)
            seen.setdefault(key, [node, 0])[1] += 1
    return [tuple(v) for v in seen.values()]


def label(node, count):
    return node.layer.name + (f" (×{count})" if count > 1 else "")


def shape_text(x_shape, out_shape):
    return f"{'x'.join(map(str, x_shape))} → {'x'.join(map(str, out_shape))}"


def layer_rows(torch, device, args):
    from hetcl.model.layers import Conv2D, Dense
    from hetcl.model.models import MODELS as BUILDERS
    rows, rng = [], np.random.default_rng(0)
    for name in args.models:
        model = BUILDERS[name](seed=0).build()
        params = model.parameters()
        for node, count in distinct_nodes(model, (Conv2D, Dense)):
            layer = node.layer
            n = args.batch
            x = rng.standard_normal((n,) + tuple(layer.input_shape)).astype(np.float32)
            w = params[f"{layer.name}.weight"]
            b = (0.1 * rng.standard_normal(w.shape[0])).astype(np.float32) \
                if f"{layer.name}.bias" in params else None  # init bias is 0
            dy = rng.standard_normal((n,) + tuple(layer.output_shape)).astype(np.float32)
            ours, t_h = hetcl_layer(device, node, x, w, b, dy, args.iters, args.reps)
            ref, t_c = torch_layer(torch, layer, node.act, x, w, b, dy, False, args.iters,
                                   args.reps)
            _, t_tf = torch_layer(torch, layer, node.act, x, w, b, dy, True, args.iters,
                                  args.reps)
            errs = [None if r is None else rel(o, r) for o, r in zip(ours, ref)]
            rows.append(dict(model=name, layer=label(node, count), kind=layer.kind,
                             act=node.act, shape=shape_text(x.shape, layer.output_shape),
                             hetcl=t_h, cudnn=t_c, tf32=t_tf, errs=errs))
            print(f"  {name} {layer.name}: done", file=sys.stderr, flush=True)
    return rows


def gemm_rows(torch, device, sizes, reps):
    from hetcl.measure.bench import median_time
    from hetcl.backend.buffers import empty, to_device
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


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="dgpu", help="OpenCL device spec (first NVIDIA match)")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--gemm-sizes", default="256,512,1024,2048,4096,8192")
    ap.add_argument("--iters", type=int, default=30, help="calls per timed loop")
    ap.add_argument("--reps", type=int, default=5, help="timed loops per point (median)")
    ap.add_argument("--steps", type=int, default=20, help="timed training steps")
    ap.add_argument("--models", default=",".join(MODELS),
                    help="models whose layers and training step run (comma-separated)")
    ap.add_argument("--out", default=None, help="markdown file (default: stdout only)")
    ap.add_argument("--png", default="cudnn_compare.png")
    args = ap.parse_args()
    args.models = [m for m in args.models.split(",") if m]
    try:
        from hetcl.model.models import INPUT_SHAPES
    except ImportError:  # find_missing says so
        INPUT_SHAPES = dict.fromkeys(args.models)
    unknown = sorted(set(args.models) - set(INPUT_SHAPES))
    if unknown or not args.models:
        ap.error(f"unknown model(s) {', '.join(unknown)}: choose from {', '.join(INPUT_SHAPES)}")
    device, missing = find_missing(args.device)
    if missing:
        print(f"cudnn_compare: skipped, missing {' and '.join(missing)}")
        return 0
    import torch
    from hetcl.measure.bench import train_throughput
    np.seterr(all="ignore")
    torch.backends.cudnn.benchmark = True
    set_tf32(torch, False)
    from cudnn_bn import bn_rows
    layers = layer_rows(torch, device, args)
    bns = bn_rows(torch, device, args)
    gemms = gemm_rows(torch, device, [int(s) for s in args.gemm_sizes.split(",") if s], args.reps)
    trains = {}
    for name in args.models:
        ours = train_throughput(name, [device], args.batch, args.steps)
        trains[name] = (ours, torch_train(torch, name, args.batch, args.steps, False),
                        torch_train(torch, name, args.batch, args.steps, True))
    text = report(torch, device, args, layers, bns, gemms, trains)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    plot(layers, args.png)
    return 0


if __name__ == "__main__":
    sys.exit(main())
