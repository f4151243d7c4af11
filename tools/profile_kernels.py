#!/usr/bin/env python3
"""Profile (not a test): where one device's training step goes, kernel by kernel.

Trains a model on one device for some warm-up steps, then enqueues one more step node by node
with every launch recorded (OpenCL profiling events) and prints, per node and phase (forward,
loss, backward, update), the kernels' device time, their count, and the totals. It also times
unprofiled steps (wall clock, host included), so "wall - kernels" is what the device spent
waiting for the host or between kernels.

    python tools/profile_kernels.py --devices 0 --model cifar-cnn --batch-size 256
"""
import argparse
import collections
import sys
import time



from hetcl.measure.bench import INPUT_SHAPES, cpu_model, random_data  # noqa: E402
from hetcl.codegen.launch import record_launches  # noqa: E402
from hetcl.backend.device import event_seconds  # noqa: E402
from hetcl.model.models import build_model  # noqa: E402
from hetcl.model.optim import SGD  # noqa: E402
from hetcl.parallel.runtime import Runtime  # noqa: E402


# A composite op's launches are recorded under its kernels and under the composite too: only
# leaf owners are summed, so that no kernel's time counts twice.
COMPOSITE = {"SplitKGemm", "ConvBackwardData"}


def owner_name(owner):
    """A short label for a launch's owner: what its kernel computes (GEMMs with their shape),
    or the composite's class."""
    return getattr(owner, "label", None) or type(owner).__name__


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", default="0", help="one device (hetcl devices lists them)")
    ap.add_argument("--model", default="cifar-cnn", choices=sorted(INPUT_SHAPES))
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20, help="timed unprofiled steps")
    return ap.parse_args()


def wall_per_step(device, step, steps):
    """Wall seconds per unprofiled step (host included), after 5 warm-up steps."""
    for i in range(5):
        step(i)
    device.queue.finish()
    t0 = time.perf_counter()
    for i in range(steps):
        step(i)
    device.queue.finish()
    return (time.perf_counter() - t0) / steps


def profiled_step(rt, device, model, opt, data, batch_size):
    """One step, node by node, every launch recorded: -> [(phase, node label, [(owner, event)])].
    data is (images, labels, batches) as random_data returns them."""
    images, labels, batches = data
    ex = rt.executor(model, device, batch_size)
    resident = rt.resident_sets.get(device, images, labels, 0.3, 0.3)
    device.profiling = True
    rows = []
    with record_launches() as launches:
        ex.gather(resident, batches[0])
    rows.append(("input", "gather", list(launches)))
    gen = ex.enqueue_step(batch_size)
    labels_seq = ([("forward", model.nodes[i]) for i in ex.ops] + [("loss", None)] +
                  [("backward", n) for n in reversed(model.nodes[1:ex.upto])])
    for phase, node in labels_seq:
        with record_launches() as launches:
            try:
                next(gen)
            except StopIteration:
                pass
        label = "loss" if node is None else f"{node.index}:{type(node.layer).__name__}"
        rows.append((phase, label, list(launches)))
    with record_launches() as launches:
        opt.apply(ex.replica)
    rows.append(("update", "all parameters", list(launches)))
    device.queue.finish()
    return rows


def print_nodes(rows):
    """A markdown row per node with leaf kernels: -> (total µs, kernel count, µs by kernel)."""
    print("| phase | node | kernels | device µs | by kernel (µs) |\n|---|---|---:|---:|---|")
    total, count, by_kind = 0.0, 0, collections.Counter()
    for phase, label, recs in rows:
        leaf = [(o, e) for o, e in recs if owner_name(o) not in COMPOSITE]
        if not leaf:
            continue
        parts = collections.Counter()
        for owner, event in leaf:
            us = event_seconds(event) * 1e6
            parts[owner_name(owner)] += us
            by_kind[owner_name(owner)] += us
        us = sum(parts.values())
        total += us
        count += len(leaf)
        detail = ", ".join(f"{k} {v:.0f}" for k, v in parts.most_common())
        print(f"| {phase} | {label} | {len(leaf)} | {us:.0f} | {detail} |")
    return total, count, by_kind


def print_profile(args, device, rows, wall):
    print(f"{args.model}, batch {args.batch_size} on {device} ({device.name}); host "
          f"{cpu_model()}")
    total, count, by_kind = print_nodes(rows)
    print(f"\nkernels per step: {count}; their device time {total / 1e3:.3f} ms; wall per "
          f"unprofiled step {wall * 1e3:.3f} ms ({args.batch_size / wall:.0f} images/s); "
          f"wall - kernels = {(wall * 1e6 - total) / 1e3:.3f} ms")
    print("by kernel: " + ", ".join(f"{k} {v / 1e3:.3f} ms" for k, v in by_kind.most_common()))


def main():
    args = parse_args()
    rt = Runtime(args.devices)
    if len(rt.devices) != 1:
        sys.exit(f"profile_kernels takes one device, got {len(rt.devices)}")
    device = rt.devices[0]
    images, labels, batches = random_data(args.model, args.batch_size, 4)
    model = build_model(args.model, INPUT_SHAPES[args.model], 10, 0)
    opt = SGD(0.01, 0.9)

    def step(i):
        rt.train_step_indices(model, opt, images, labels, batches[i % 4], 0.3, 0.3)

    wall = wall_per_step(device, step, args.steps)
    rows = profiled_step(rt, device, model, opt, (images, labels, batches), args.batch_size)
    print_profile(args, device, rows, wall)


if __name__ == "__main__":
    main()
