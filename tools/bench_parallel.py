#!/usr/bin/env python3
"""Benchmark (not a test): data vs hybrid parallelism (issue 8) on the same devices, in one
process: training images/s and bytes moved between the devices per step, in alternating
rounds, then which mode `auto` picks and whether that is the faster one.

    python tools/bench_parallel.py --devices 0,1 --model cifar-cnn-wide --batch-size 64
    python tools/bench_parallel.py --devices gpu --model cifar-cnn-wide --batch-size 512

--fixed keeps every device in use (the scheduler never drops one): two PoCL devices on the
same cores would otherwise be cut to one and both modes would time a single device.
"""
import argparse
import statistics


from hetcl.measure.bench import INPUT_SHAPES, cpu_model, train_throughput  # noqa: E402
from hetcl.backend.device import select_devices  # noqa: E402
from hetcl.parallel.auto import AUTO_STEPS  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", default="all")
    ap.add_argument("--model", default="cifar-cnn-wide", choices=sorted(INPUT_SHAPES))
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--fixed", action="store_true", help="never drop a device")
    args = ap.parse_args()
    devices = select_devices(args.devices)
    def run(mode):  # auto: warm up past its trial (2 x AUTO_STEPS steps)
        warmup = (2 * AUTO_STEPS + 1 if mode == "auto" else 3) if args.fixed else None
        return train_throughput(args.model, devices, args.batch_size, args.steps,
                                parallel=mode, adaptive=not args.fixed, warmup=warmup)

    rates, moved, splits = {"data": [], "hybrid": []}, {}, {}
    for _ in range(args.rounds):
        for mode in rates:
            rates[mode].append(run(mode))
            moved[mode], splits[mode] = train_throughput.bytes, train_throughput.last_split
    auto_rate = run("auto")
    picked = next(iter(train_throughput.modes.values()))
    note = next((m for m in train_throughput.messages if m.startswith("parallel auto")), "")
    names = ", ".join(f"{d.index}:{d.name}" for d in devices)
    print(f"{args.model}, batch {args.batch_size}, {args.steps} steps x {args.rounds} rounds "
          f"(alternating) on {names}; host {cpu_model()}")
    print("| mode | images/s (median) | rounds | MB moved per step | split |")
    print("|---|---:|---|---:|---|")
    for mode, values in rates.items():
        print(f"| {mode} | {statistics.median(values):.0f} | "
              f"{', '.join(f'{v:.0f}' for v in values)} | {moved[mode] / 1e6:.1f} | "
              f"{'/'.join(map(str, splits[mode]))} |")
    faster = max(rates, key=lambda m: statistics.median(rates[m]))
    print(f"| auto -> {picked} | {auto_rate:.0f} | | {train_throughput.bytes / 1e6:.1f} | "
          f"{'/'.join(map(str, train_throughput.last_split))} |")
    print(f"auto picked {picked}; measured faster: {faster} "
          f"({'right' if picked == faster else 'WRONG'})")
    print(note)


if __name__ == "__main__":
    main()
