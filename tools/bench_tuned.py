#!/usr/bin/env python3
"""Benchmark (not a test): the tuning DB's kernels against the defaults on one device.

Builds the model twice in one process - once with an empty tuning DB (every kernel's defaults),
once with the DB `hetcl tune` wrote (HETCL_CACHE_DIR) - and alternates between them, so that a
busy machine slows both alike. Per layer: the busy time of the layer's kernels in a training
step (OpenCL profiling events; forward and backward; best of --rounds). Then training: images/s
of --steps steps, alternating, best of --rounds. Prints markdown with the ratio default / tuned
(> 1: the tuned kernels are faster).

    hetcl tune --devices 0 --model lenet5 && python tools/bench_tuned.py --devices 0 --model lenet5
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hetcl.bench import INPUT_SHAPES, cpu_model  # noqa: E402
from hetcl.codegen import tunedb  # noqa: E402
from hetcl.device import event_seconds  # noqa: E402
from hetcl.models import build_model  # noqa: E402
from hetcl.optim import SGD  # noqa: E402
from hetcl.runtime import Runtime  # noqa: E402


def build(variant, args, device):
    """A runtime, model and executor whose kernels come from the DB (variant "tuned") or from
    the defaults (an empty DB)."""
    tunedb._db = tunedb.TuneDB([os.devnull]) if variant == "default" else None
    model = build_model(args.model, INPUT_SHAPES[args.model], 10, 0)
    model.build(INPUT_SHAPES[args.model])
    rt = Runtime([device])
    ex = rt.executor(model, device, args.batch_size)
    rng = np.random.default_rng(0)
    ex.set_input(rng.standard_normal((args.batch_size,) + INPUT_SHAPES[args.model]),
                 rng.integers(0, 10, args.batch_size))
    for _ in ex.enqueue_step(args.batch_size):  # builds every kernel, lazy ones included
        pass
    tunedb._db = None
    return rt, model, ex


def layer_times(ex, n):
    """{label: seconds of kernel time} for one training step, node by node."""
    nodes, device = ex.nodes, ex.replica.device
    labels = [f"{nodes[i].layer.name} fwd" for i in ex.ops] + ["loss"] + \
        [f"{node.layer.name} bwd" for node in reversed(nodes[1:])]
    device.kernel_events = []
    marks = [0]
    for _ in ex.enqueue_step(n):
        marks.append(len(device.kernel_events))
    device.queue.finish()
    events, device.kernel_events = device.kernel_events, None
    out = {}
    for label, a, b in zip(labels, marks, marks[1:]):
        if b > a:
            out[label] = sum(map(event_seconds, events[a:b]))
    return out


def train_rate(rt, model, args, images, labels, batches):
    opt = SGD(0.01, 0.9)
    for i in range(3):
        rt.train_step_indices(model, opt, images, labels, batches[i % len(batches)], 0.3, 0.3)
    rt.devices[0].queue.finish()
    start = time.perf_counter()
    for i in range(args.steps):
        rt.train_step_indices(model, opt, images, labels, batches[i % len(batches)], 0.3, 0.3)
    rt.devices[0].queue.finish()
    return args.steps * args.batch_size / (time.perf_counter() - start)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", default="0", help="one device")
    ap.add_argument("--model", default="lenet5", choices=sorted(INPUT_SHAPES))
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=7, help="training rounds")
    ap.add_argument("--layer-rounds", type=int, default=40,
                    help="rounds of per-layer timing (min of each: noise only adds time)")
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()
    device = Runtime(args.devices).devices[0]
    variants = {v: build(v, args, device) for v in ("default", "tuned")}

    best = {v: {} for v in variants}
    for _ in range(args.layer_rounds):
        for v, (_, _, ex) in variants.items():
            for label, t in layer_times(ex, args.batch_size).items():
                best[v][label] = min(t, best[v].get(label, float("inf")))
    rng = np.random.default_rng(1)
    shape = INPUT_SHAPES[args.model]
    images = rng.integers(0, 256, (args.batch_size * 4,) + shape, dtype=np.uint8)
    labels = rng.integers(0, 10, len(images), dtype=np.uint8)
    batches = [rng.permutation(len(images))[:args.batch_size].astype(np.int32)
               for _ in range(4)]
    rates = {v: [] for v in variants}
    for _ in range(args.rounds):
        for v, (rt, model, _) in variants.items():
            rates[v].append(train_rate(rt, model, args, images, labels, batches))

    print(f"# Tuned vs default kernels: {args.model}, batch {args.batch_size}\n")
    print(f"- device: {device} ({device.profile['driver_version']}); host CPU: {cpu_model()}")
    print(f"- tuning DB: {tunedb.user_path()}; best of {args.layer_rounds} (layers) and "
          f"{args.rounds} (training) alternating rounds")
    print(f"- command: `python tools/bench_tuned.py {' '.join(sys.argv[1:])}`\n")
    print("| layer | default ms | tuned ms | default / tuned |")
    print("|---|--:|--:|--:|")
    for label in best["default"]:
        d, t = best["default"][label] * 1e3, best["tuned"][label] * 1e3
        print(f"| {label} | {d:.3f} | {t:.3f} | {d / t:.2f} |")
    d, t = max(rates["default"]), max(rates["tuned"])
    print(f"| **training images/s** | {d:.0f} | {t:.0f} | {t / d:.2f} (tuned / default) |")


if __name__ == "__main__":
    main()
