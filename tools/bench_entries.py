#!/usr/bin/env python3
"""Benchmark (not a test): the kernel time of each tuning-DB entry in one training step, with
the bucket lookup reaching different distances (hetcl/tuning/buckets.py NEAREST_CLASSES), and
the parameters each chose. Shows which entries a shard of another size takes and what they
cost against the defaults.

    python tools/bench_entries.py --devices gpu --model cifar-cnn --batch-size 48 --reach 99,0
"""
import argparse
import collections
import statistics

from hetcl.backend.device import event_seconds, select_devices
from hetcl.tuning import buckets, tune, tunedb


def entry_times(model, device, batch, reach, steps=5):
    """{(kernel, bucket): (median ms per step, params)} with lookups reaching `reach` classes."""
    buckets.NEAREST_CLASSES = reach
    tunedb._db = None  # (a fresh DB object: nothing looked up before counts)
    ex = tune.step_executor(model, device, batch)
    times, chosen = collections.defaultdict(list), {}
    for _ in range(steps):
        sums = collections.Counter()
        for owner, event in tune._step_launches(ex, batch):
            if owner.tune:
                key = tuple(owner.tune[:2])
                sums[key] += event_seconds(event) * 1e3
                chosen[key] = str(owner.params)
        for key, ms in sums.items():
            times[key].append(ms)
    return {k: (statistics.median(v), chosen[k]) for k, v in times.items()}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--devices", default="0", help="one device (hetcl devices lists them)")
    ap.add_argument("--model", default="cifar-cnn")
    ap.add_argument("--batch-size", type=int, default=48)
    ap.add_argument("--reach", default="99,0", help="NEAREST_CLASSES values, comma-separated")
    args = ap.parse_args()
    device = select_devices(args.devices)[0]
    reaches = [int(r) for r in args.reach.split(",")]
    runs = [entry_times(args.model, device, args.batch_size, r) for r in reaches]
    print(f"{device.name}, {args.model}, batch {args.batch_size}; ms per step by reach "
          f"{', '.join(map(str, reaches))}")
    for key in runs[0]:
        cells = [f"{run[key][0]:8.3f}" if key in run else "       -" for run in runs]
        params = {run[key][1] for run in runs if key in run}
        note = "" if len(params) == 1 else "  " + " | ".join(run[key][1] for run in runs
                                                              if key in run)
        print(f"{key[0]:12s} {key[1][:44]:44s} {' '.join(cells)}{note}")
    print("sum        ", " ".join(f"{sum(t for t, _ in run.values()):8.3f}" for run in runs))


if __name__ == "__main__":
    main()
