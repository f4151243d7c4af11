#!/usr/bin/env python3
"""Benchmark (not a test): training images/s with each conv layer's column buffer capped at
several budgets (hetcl.engine.ops.column_budget, by default a quarter of a CPU's reported
cache), one TrainLoop per budget in one process, timed in alternating windows.

    python tools/bench_column_budget.py --devices 0 --model resnet20 --batch 128 --budgets 64,8

Prints a markdown table: each budget's median images/s over the rounds and its ratio to the
first budget's, and the device's default budget.
"""
import argparse
import statistics

from hetcl.backend.device import select_devices
from hetcl.engine import ops
from hetcl.measure.bench import INPUT_SHAPES, TrainLoop


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", default="0")
    ap.add_argument("--model", default="resnet20", choices=sorted(INPUT_SHAPES))
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--budgets", default="64,8", help="MiB, comma-separated")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=3)
    args = ap.parse_args()
    default = {d.index: ops.column_budget(d) >> 20 for d in select_devices(args.devices)}
    budget_of, loops = ops.column_budget, {}
    try:
        for mib in (int(b) for b in args.budgets.split(",")):
            ops.column_budget = lambda device, mib=mib: mib << 20  # read as the layers bind
            loops[mib] = TrainLoop(args.model, args.devices, args.batch, batches=2)
    finally:
        ops.column_budget = budget_of
    rates = {mib: [] for mib in loops}
    for _ in range(args.rounds):
        for mib, loop in loops.items():
            rates[mib].append(loop.rate(args.steps, 2.0))
    devices = ", ".join(f"{d} (default {default[d.index]} MiB)"
                        for d in next(iter(loops.values())).rt.devices)
    print(f"{args.model}, batch {args.batch}, {args.rounds} rounds on {devices}\n")
    print("| column budget | images/s (median) | min-max | vs first |\n|---:|---:|---:|---:|")
    base = statistics.median(next(iter(rates.values())))
    for mib, r in rates.items():
        med = statistics.median(r)
        print(f"| {mib} MiB | {med:.0f} | {min(r):.0f}-{max(r):.0f} | {med / base:.2f} |")


if __name__ == "__main__":
    main()
