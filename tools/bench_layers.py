#!/usr/bin/env python3
"""Benchmark (not a test): every layer of LeNet-5 and of a small CIFAR VGG-style net, forward and
backward, hetcl's bound op on one OpenCL device vs PyTorch on the CPU, in the same process.

A "layer" is what the runtime binds: ReLU is fused into the Conv2D/Dense before it (hetcl applies
it in the epilogue), so the torch side times Conv2d+ReLU / Linear+ReLU as one unit; Flatten is a
view in both and is left out. The first layer of each net gets no input gradient (the runtime
never computes one for the data), in both libraries. Times are wall clock (time.perf_counter)
around the call with device.queue.finish() after it, so they include hetcl's Python enqueue cost;
each figure is the best of --repeats runs (or more, see best_seconds) after one warm-up run (which also builds the
kernels). The warm-up outputs are compared with torch (relative error of y and dx, the larger is
reported) so that a fast but wrong kernel cannot go unnoticed. The machine should be otherwise
idle: the 1-minute load average before and after each net is printed with its table.

GFLOP/s counts 2 FLOPs per multiply-add of the conv/dense product only (bias and ReLU left out);
backward is 2x forward (dx and dW), 1x for a first layer that computes no dx. Pool has none.

    python tools/bench_layers.py [--nets lenet5,vgg] [--batch 256] [--lenet-batch 256]
                                 [--device 0] [--threads 2] [--repeats 3] [--out FILE]
"""
import argparse
import os
import sys
import time

import numpy as np


import hetcl  # noqa: E402
from hetcl.backend.buffers import empty, to_device  # noqa: E402
from hetcl.backend.device import select_devices  # noqa: E402
from hetcl.model.layers import Conv2D, Dense, Flatten, MaxPool2D, ReLU  # noqa: E402
from hetcl.measure.bench import cpu_model  # noqa: E402


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def lenet5():
    return [Conv2D(1, 6, 5, padding=2), ReLU(), MaxPool2D(2), Conv2D(6, 16, 5), ReLU(),
            MaxPool2D(2), Flatten(), Dense(400, 120), ReLU(), Dense(120, 84), ReLU(),
            Dense(84, 10)], (1, 28, 28)


def vgg():
    return [Conv2D(3, 64, 3, padding=1), ReLU(), Conv2D(64, 64, 3, padding=1), ReLU(),
            MaxPool2D(2), Conv2D(64, 128, 3, padding=1), ReLU(), Conv2D(128, 128, 3, padding=1),
            ReLU(), MaxPool2D(2), Flatten(), Dense(128 * 8 * 8, 256), ReLU(), Dense(256, 10)], \
        (3, 32, 32)


NETS = {"lenet5": lenet5, "vgg": vgg}


def torch_module(torch, layer, act):
    nn = torch.nn
    if isinstance(layer, Conv2D):
        mod = nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size,
                        stride=layer.stride, padding=layer.padding)
    elif isinstance(layer, Dense):
        mod = nn.Linear(layer.in_features, layer.out_features)
    elif isinstance(layer, MaxPool2D):
        mod = nn.MaxPool2d(layer.size, layer.stride)
    elif isinstance(layer, ReLU):
        mod = nn.ReLU()
    else:
        raise ValueError(f"no torch equivalent for {layer!r}")
    return nn.Sequential(mod, nn.ReLU()) if act == "relu" else mod


def describe(layer):
    if isinstance(layer, Conv2D):
        k, s, p = layer.kernel_size, layer.stride, layer.padding
        return (f"{layer.name} {layer.in_channels}->{layer.out_channels} {k[0]}x{k[1]}"
                + (f" s{s[0]}" if s != (1, 1) else "") + (f" p{p[0]}" if p != (0, 0) else ""))
    if isinstance(layer, Dense):
        return f"{layer.name} {layer.in_features}->{layer.out_features}"
    if isinstance(layer, MaxPool2D):
        return f"{layer.name} {layer.size[0]}x{layer.size[1]}/{layer.stride[0]}"
    return f"{layer.name}"


def macs(layer, n):
    if isinstance(layer, Conv2D):
        f, oh, ow = layer.output_shape
        kh, kw = layer.kernel_size
        return n * f * oh * ow * layer.in_channels * kh * kw
    if isinstance(layer, Dense):
        return n * layer.in_features * layer.out_features
    return 0


def best_seconds(fn, repeats, min_time, before=None):
    """Fastest of at least `repeats` runs; short calls are repeated until `min_time` seconds of
    them are summed (at most 200 runs). The minimum, not the median: on a shared 2-core machine
    another process that takes one core makes a 2-thread call wait a whole scheduler slice
    (~6 ms, seen on 0.05 ms torch calls), and only the best run is free of that."""
    times = []
    while len(times) < repeats or (sum(times) < min_time and len(times) < 200):
        if before is not None:
            before()
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def rel(a, b):
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / max(np.linalg.norm(b), 1e-30))


def bench_hetcl(device, node, n, rng, repeats, min_time, needs_dx):
    layer = node.layer
    op = layer.bind(device, n, act=node.act)
    x_host = rng.standard_normal((n,) + tuple(layer.input_shape)).astype(np.float32)
    params_host = {k: v for k, v in layer.init_params(rng).items()}
    params_host = {k: (v + 0.01 * rng.standard_normal(v.shape)).astype(np.float32)
                   for k, v in params_host.items()}  # non-zero bias so the bias path counts
    dy_host = rng.standard_normal((n,) + layer.output_shape).astype(np.float32)
    x, dy = to_device(device, x_host), to_device(device, dy_host)
    p = {k: to_device(device, v) for k, v in params_host.items()}
    g = {k: empty(device, v.shape) for k, v in params_host.items()}
    y = empty(device, (n,) + layer.output_shape)
    dxs = [empty(device, x.shape) if needs_dx else None]
    q = device.queue

    def fwd():
        op.forward([x], y, p)
        q.finish()

    def bwd():
        op.backward([x], y, dy, dxs, p, g)
        q.finish()

    t0 = time.perf_counter()
    fwd()
    bwd()  # warm-up: builds (or loads) the kernels and touches every buffer
    build_s = time.perf_counter() - t0
    out = {"y": y.get(), "dx": dxs[0].get() if needs_dx else None,
           "grads": {k: v.get() for k, v in g.items()}}
    t_fwd = best_seconds(fwd, repeats, min_time)
    t_bwd = best_seconds(bwd, repeats, min_time)
    return t_fwd, t_bwd, build_s, (x_host, params_host, dy_host), out


def bench_torch(torch, node, n, repeats, min_time, needs_dx, data, hetcl_y):
    x_host, params_host, dy_host = data
    mod = torch_module(torch, node.layer, node.act)
    core = mod[0] if isinstance(mod, torch.nn.Sequential) else mod
    with torch.no_grad():
        for k, v in params_host.items():
            getattr(core, k).copy_(torch.from_numpy(v))
    x = torch.from_numpy(x_host).requires_grad_(needs_dx)
    dy = torch.from_numpy(dy_host)
    state = {}

    def fwd():  # autograd on, as in training: the graph is recorded for the backward
        state["y"] = mod(x)

    def zero():  # hetcl writes its gradients; let torch allocate fresh ones, not accumulate
        x.grad = None
        for prm in mod.parameters():
            prm.grad = None
        fwd()

    def bwd():
        state["y"].backward(dy)

    zero()
    bwd()  # warm-up
    out = {"y": state["y"].detach().numpy(), "dx": x.grad.numpy() if needs_dx else None}
    if needs_dx and mod is not core:
        # The check of dx runs the ReLU backward with hetcl's mask (y > 0 of hetcl's output):
        # an output within float32 rounding of 0 may be positive in one library and not in the
        # other, and one such flip in 16M outputs moves dx by ~1e-3 relative (seen on VGG conv1).
        x.grad = None
        core(x).backward(dy * torch.from_numpy(np.ascontiguousarray(hetcl_y > 0)))
        out["dx"] = x.grad.numpy()
    t_fwd = best_seconds(fwd, repeats, min_time)
    t_bwd = best_seconds(bwd, repeats, min_time, before=zero)
    return t_fwd, t_bwd, out


def fmt_ms(s):
    return f"{s * 1e3:.2f}" if s >= 1e-3 else f"{s * 1e3:.3f}"


def bench_net(name, builder, n, device, torch, repeats, min_time):
    layers, input_shape = builder()
    model = hetcl.Sequential(layers, seed=0, input_shape=input_shape).build()
    rng = np.random.default_rng(0)
    rows, totals = [], [0.0, 0.0, 0.0, 0.0]
    load0 = os.getloadavg()[0]
    first = True
    for node in model.nodes[1:]:
        layer = node.layer
        if node.fused_into is not None or getattr(layer, "alias", False):
            continue  # a fused ReLU is timed with its producer; Flatten is a view
        needs_dx = not first
        first = False
        label = describe(layer) + ("+ReLU" if node.act == "relu" else "")
        log(f"[{name} n={n}] {label} ...")
        h_fwd, h_bwd, build_s, data, h_out = bench_hetcl(device, node, n, rng, repeats, min_time, needs_dx)
        t_fwd, t_bwd, t_out = bench_torch(torch, node, n, repeats, min_time, needs_dx, data, h_out["y"])
        err = rel(h_out["y"], t_out["y"])
        if needs_dx:
            err = max(err, rel(h_out["dx"], t_out["dx"]))
        log(f"    hetcl fwd {fmt_ms(h_fwd)} ms bwd {fmt_ms(h_bwd)} ms (first call {build_s:.1f} s)"
            f" | torch fwd {fmt_ms(t_fwd)} ms bwd {fmt_ms(t_bwd)} ms | rel err {err:.1e}")
        fl = 2.0 * macs(layer, n)
        fl_bwd = fl * (2 if needs_dx else 1)

        def gf(flops, s):
            return f"{flops / s / 1e9:.1f}" if flops else "-"

        rows.append(f"| {label} | {(n,) + tuple(layer.input_shape)} | {fmt_ms(h_fwd)} | "
                    f"{gf(fl, h_fwd)} | {fmt_ms(t_fwd)} | {gf(fl, t_fwd)} | "
                    f"{h_fwd / t_fwd:.2f} | {fmt_ms(h_bwd)} | {gf(fl_bwd, h_bwd)} | "
                    f"{fmt_ms(t_bwd)} | {gf(fl_bwd, t_bwd)} | {h_bwd / t_bwd:.2f} | {err:.0e} |")
        for i, v in enumerate((h_fwd, t_fwd, h_bwd, t_bwd)):
            totals[i] += v
    h_f, t_f, h_b, t_b = totals
    rows.append(f"| **total** | | {fmt_ms(h_f)} | | {fmt_ms(t_f)} | | {h_f / t_f:.2f} | "
                f"{fmt_ms(h_b)} | | {fmt_ms(t_b)} | | {h_b / t_b:.2f} | |")
    head = [f"### {name}, batch {n}", "",
            f"load average (1 min) before {load0:.2f}, after {os.getloadavg()[0]:.2f}", "",
            "| layer | input | hetcl fwd ms | GFLOP/s | torch fwd ms | GFLOP/s | hetcl/torch | "
            "hetcl bwd ms | GFLOP/s | torch bwd ms | GFLOP/s | hetcl/torch | rel err |",
            "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    return "\n".join(head + rows)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nets", default="lenet5,vgg", help="comma list of: " + ",".join(NETS))
    ap.add_argument("--batch", type=int, default=256, help="VGG batch size (default 256)")
    ap.add_argument("--lenet-batch", type=int, default=256, help="LeNet-5 batch (default 256)")
    ap.add_argument("--device", default="0",
                    help="OpenCL device: an index as `hetcl devices` prints it, or cpu/gpu "
                         "(the first match is used; default 0)")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per figure (default 3)")
    ap.add_argument("--min-time", type=float, default=0.2,
                    help="repeat a short call until this many seconds are timed (default 0.2)")
    ap.add_argument("--out", help="also write the markdown here")
    args = ap.parse_args(argv)

    try:
        import torch
    except ImportError:
        ap.error("PyTorch is needed for the comparison: pip install torch")
    torch.set_num_threads(args.threads)
    device = select_devices(args.device)[0]
    nets = [s.strip() for s in args.nets.split(",") if s.strip()]
    for net in nets:
        if net not in NETS:
            ap.error(f"unknown net {net!r}: use {', '.join(NETS)}")

    prof = device.profile
    parts = ["# hetcl vs PyTorch CPU, per layer", "",
             f"- CPU: {cpu_model()} ({os.cpu_count()} logical cores)",
             f"- OpenCL device: {prof['name']} ({prof['platform']}, driver "
             f"{prof['driver_version']}, {prof['compute_units']} compute units)",
             f"- PyTorch {torch.__version__}, {args.threads} threads; numpy {np.__version__}",
             f"- best of >= {args.repeats} runs (more until {args.min_time} s) after a warm-up; "
             f"wall clock incl. enqueue; "
             f"ReLU fused into the conv/dense before it in both",
             f"- command: `{' '.join([os.path.basename(sys.executable)] + sys.argv)}`", ""]
    for net in nets:
        n = args.lenet_batch if net == "lenet5" else args.batch
        t0 = time.perf_counter()
        parts += [bench_net(net, NETS[net], n, device, torch, args.repeats, args.min_time), ""]
        log(f"[{net}] done in {time.perf_counter() - t0:.0f} s")
    text = "\n".join(parts)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
