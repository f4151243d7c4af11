"""The markdown report and the per-layer chart of tools/cudnn_compare.py's measurements.

report() takes the rows that cudnn_compare.py measures: layers (dicts with model, layer, kind,
act, shape, hetcl/cudnn/tf32 = (fwd, bwd-data, bwd-filter) seconds, errs, None where a layer
has no bias), bns (tools/cudnn_bn.py's batch-norm rows), gemms (dicts with n, hetcl/fp32/tf32
GFLOP/s, err or None) and trains ({model: (hetcl, FP32, TF32) images/s})."""
import subprocess
import sys

import numpy as np

TOL = 1e-4
MODELS = ("lenet5", "cifar-cnn", "resnet20")  # cudnn_compare.py --models default


def geomean(values):
    return float(np.exp(np.mean(np.log(values))))


def us(seconds):
    return f"{seconds * 1e6:.1f}"


def driver_version():
    """The NVIDIA driver as nvidia-smi reports it, or "unknown"."""
    try:
        return subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                              capture_output=True, text=True, timeout=20).stdout.split()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "unknown"


def header_lines(torch, device):
    return ["# hetcl (OpenCL) vs cuDNN/cuBLAS (PyTorch)", "",
            f"- GPU: {torch.cuda.get_device_name()}; NVIDIA driver {driver_version()}",
            f"- PyTorch {torch.__version__}, CUDA {torch.version.cuda}, "
            f"cuDNN {torch.backends.cudnn.version()} (cudnn.benchmark=True)",
            f"- OpenCL: {device.name} on {device.profile['platform']}, driver "
            f"{device.profile['driver_version']} ({device.profile['device_version']})",
            f"- command: `{' '.join(sys.argv)}`", ""]


def err_cell(errs):
    """Relative errors joined with " / " (None: not applicable, "–"), **FAIL** past TOL."""
    bad = any(e is not None and not e < TOL for e in errs)
    return " / ".join("–" if e is None else f"{e:.1e}" for e in errs) \
        + (" **FAIL**" if bad else "")


def ratio_cells(h, c):
    return [f"{us(a)} | {us(b)} | {a / b:.2f}" for a, b in zip(h, c)]


def model_names(rows):
    return list(dict.fromkeys(r["model"] for r in rows))


def layer_row(r):
    h, c = r["hetcl"], r["cudnn"]
    cells = ratio_cells(h, c)
    errs = err_cell(r["errs"])
    return (f"| {r['model']} | {r['layer']} | {r['shape']} | {r['act']} | "
            + " | ".join(cells) + f" | {sum(h) / sum(c):.2f} | {us(sum(r['tf32']))} "
            f"| {errs} |")


def layer_lines(layers, batch):
    L = [f"## Layers (batch {batch}; distinct shapes, ×k: k layers of the model share it; "
         "µs per call; ratio = hetcl / cuDNN FP32)", "",
         "| model | layer | shape | act | fwd hetcl | fwd cuDNN | ratio | bwd-data hetcl "
         "| bwd-data cuDNN | ratio | bwd-filter hetcl | bwd-filter cuDNN | ratio | total ratio "
         "| cuDNN TF32 total | rel err y / dx / dW / db |",
         "|---|---|---|---|" + "---:|" * 11 + "---|"]
    L += [layer_row(r) for r in layers]
    for name in model_names(layers):
        convs = [sum(r["hetcl"]) / sum(r["cudnn"]) for r in layers
                 if r["model"] == name and r["kind"] == "conv"]
        if convs:
            L.append(f"\nGeometric mean of the conv layers' (fwd+bwd) ratios, {name}: "
                     f"**{geomean(convs):.2f}**")
    return L + ["", "Notes: hetcl times are wall time per call over a loop between "
                "`queue.finish()`s (median of reps). Backward-filter = `op.backward(dxs=[None])` "
                "(bias + weight gradient, with the activation derivative); backward-data = full "
                "backward minus backward-filter. Both backward times are taken after a forward, as "
                "in training (differences of fwd, fwd+bwd-filter and fwd+full loops). cuDNN times "
                "are torch.cuda.Event times; its backward-filter also includes the activation "
                "derivative and bias gradient (aten.convolution_backward / matmul). Errors are "
                f"against cuDNN FP32; tolerance {TOL:g}; db is – for a conv without bias.", ""]


def bn_lines(bns, batch):
    L = [f"## Batch norm (batch {batch}; distinct shapes; µs per call; ratio = hetcl / "
         "PyTorch)", "",
         "| model | layer | shape | act | train fwd hetcl | train fwd PyTorch | ratio "
         "| bwd hetcl | bwd PyTorch | ratio | train (fwd+bwd) ratio | eval fwd hetcl "
         "| eval fwd PyTorch | ratio | PyTorch kernel "
         "| rel err y / dx / dγ / dβ / running mean / running var / eval y |",
         "|---|---|---|---|" + "---:|" * 10 + "---|---|"]
    for r in bns:
        h, c = r["hetcl"], r["cudnn"]
        cells = ratio_cells(h, c)
        L.append(f"| {r['model']} | {r['layer']} | {r['shape']} | {r['act']} | {cells[0]} "
                 f"| {cells[1]} | {(h[0] + h[1]) / (c[0] + c[1]):.2f} | {cells[2]} "
                 f"| {r['kernel']} | {err_cell(r['errs'])} |")
    for name in model_names(bns):
        rows = [r for r in bns if r["model"] == name]
        train = geomean([(r["hetcl"][0] + r["hetcl"][1]) / (r["cudnn"][0] + r["cudnn"][1])
                         for r in rows])
        ev = geomean([r["hetcl"][2] / r["cudnn"][2] for r in rows])
        L.append(f"\nGeometric means of the batch-norm ratios, {name}: training (fwd+bwd) "
                 f"**{train:.2f}**, evaluation forward **{ev:.2f}**")
    return L + ["", "Notes: training mode on one device (statistics of the whole batch), "
                "evaluation mode with running statistics. The training forward computes the "
                "batch statistics, updates the running ones, normalises and applies the fused "
                "ReLU (hetcl: two kernels; PyTorch: aten._batch_norm_impl_index - F.batch_norm's "
                "own dispatch to cuDNN or ATen's native kernels, named in the row - then F.relu, "
                "which PyTorch does not fuse). One backward column (dx, dγ and dβ together, with "
                "the ReLU derivative): PyTorch's backward (aten.threshold_backward + "
                "aten._batch_norm_impl_index_backward, autograd's kernels for that forward) is one "
                "call for all three, and dx needs the same per-channel sums as dγ and dβ, so a "
                "bwd-data/bwd-filter split would not compare like with like; both sides time the "
                "backward alone, after a training forward. Evaluation forward: PyTorch "
                "F.batch_norm(training=False) (+ F.relu). hetcl: wall time per call over loops "
                "between `queue.finish()`s; PyTorch: torch.cuda.Event; medians of reps. No TF32 "
                "column: batch norm does no matrix products. Errors against PyTorch FP32; "
                f"tolerance {TOL:g}.", ""]


def gemm_lines(gemms):
    L = ["## GEMM, square C = A B (GFLOP/s; ratio = hetcl time / cuBLAS FP32 time)", "",
         "| n | hetcl | cuBLAS FP32 | hetcl time / cuBLAS time | cuBLAS TF32 | check |",
         "|---:|---:|---:|---:|---:|---|"]
    for r in gemms:
        check = "" if r["err"] is None else ("ok" if r["err"] < TOL else "**FAIL**") \
            + f" (rel err {r['err']:.1e})"
        L.append(f"| {r['n']} | {r['hetcl']:.0f} | {r['fp32']:.0f} | {r['fp32'] / r['hetcl']:.2f} "
                 f"| {r['tf32']:.0f} | {check} |")
    return L + ["", "hetcl: OpenCL profiling events; cuBLAS: torch.mm, torch.cuda.Event; medians.",
                ""]


def train_lines(trains, batch, steps):
    L = [f"## Training step (batch {batch}, {steps} steps after warm-up; images/s)", "",
         "| model | hetcl | PyTorch FP32 | hetcl time / PyTorch time | PyTorch TF32 |",
         "|---|---:|---:|---:|---:|"]
    for name, (ours, fp32, tf32) in trains.items():
        L.append(f"| {name} | {ours:.0f} | {fp32:.0f} | {fp32 / ours:.2f} | {tf32:.0f} |")
    return L + ["", "hetcl: hetcl.measure.bench.train_throughput (uint8 images resident on the "
                "device, gathered each step); PyTorch: the same model (tools/torch_twin.py, batch "
                "norm in training mode), eager, SGD momentum, CrossEntropyLoss, random data "
                "already on the GPU.", ""]


def report(torch, device, args, layers, bns, gemms, trains):
    """The whole markdown report (args: batch and steps of the run)."""
    return "\n".join(header_lines(torch, device) + layer_lines(layers, args.batch)
                     + (bn_lines(bns, args.batch) if bns else []) + gemm_lines(gemms)
                     + train_lines(trains, args.batch, args.steps))


def plot(layers, path):
    """A log-scale bar chart of each layer's hetcl / cuDNN time ratios, written to path."""
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
