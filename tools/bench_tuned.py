#!/usr/bin/env python3
"""Benchmark (not a test): the tuning DB's kernels against the defaults on one device.

Builds the model twice in one process - once with an empty tuning DB (every kernel's defaults),
once with the DB `hetcl tune` wrote (HETCL_CACHE_DIR) - and alternates between them, so that a
busy machine slows both alike. Per layer: the busy time of the layer's kernels in a training
step (OpenCL profiling events; forward and backward; best of --layer-rounds). Then training:
images/s of --steps steps (hetcl.measure.bench.train_throughput), alternating, best of --rounds. Prints markdown with the ratio default / tuned
(> 1: the tuned kernels are faster).

    hetcl tune --devices 0 --model lenet5 && python tools/bench_tuned.py --devices 0 --model lenet5
"""
import argparse
import os
import sys


from hetcl.measure.bench import INPUT_SHAPES, cpu_model, train_throughput  # noqa: E402
from hetcl.tuning import tunedb  # noqa: E402
from hetcl.backend.device import event_seconds  # noqa: E402
from hetcl.parallel.runtime import Runtime  # noqa: E402
from hetcl.tuning.tune import step_executor  # noqa: E402


def with_variant(variant, build):
    """build() with kernels from the DB (variant "tuned") or the defaults (an empty DB)."""
    tunedb._db = tunedb.TuneDB([os.devnull]) if variant == "default" else None
    try:
        return build()
    finally:
        tunedb._db = None


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
    variants = {v: with_variant(v, lambda: step_executor(args.model, device, args.batch_size))
                for v in ("default", "tuned")}

    best = {v: {} for v in variants}
    for _ in range(args.layer_rounds):
        for v, ex in variants.items():
            for label, t in layer_times(ex, args.batch_size).items():
                best[v][label] = min(t, best[v].get(label, float("inf")))
    rates = {v: [] for v in variants}
    for _ in range(args.rounds):  # (each round builds the model anew: in-memory program cache)
        for v in variants:
            rates[v].append(with_variant(v, lambda: train_throughput(
                args.model, [device], args.batch_size, args.steps, warmup=3)))

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
