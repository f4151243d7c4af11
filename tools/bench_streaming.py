#!/usr/bin/env python3
"""Benchmark (not a test): training images/s with the data set resident on the devices, beside
the same set streamed from host memory (forced over the data budget, HETCL_DATA_BUDGET): as by
default, with each step's rows gathered on the host at the step instead of ahead (no
next_indices), and with every upload on the copy queue; and beside resident data with
`--augment flip-crop`; in alternating timed windows of one process.

    python tools/bench_streaming.py --devices gpu --model lenet5 --batch 256 --rounds 7

Prints a markdown table: the median images/s of each configuration over the rounds and its
ratio to resident data.
"""
import argparse
import os
import statistics

from hetcl.engine import device_data
from hetcl.engine.resident_sets import Augment
from hetcl.measure.bench import INPUT_SHAPES, TrainLoop

# Batches of random images in the data set: at batch 256 of 28x28, 51 MB as Fashion-MNIST's
# 47, so that the host's gather of a streamed step's rows reads main memory, not a cache.
BATCHES = 256


def streamed(model, devices, batch, main_queue_bytes, lookahead=True):
    """A TrainLoop whose set streams (built and first used over budget), its uploads on the
    main queue up to main_queue_bytes (device_data.MAIN_QUEUE_UPLOAD_BYTES), else the copy
    queue."""
    os.environ["HETCL_DATA_BUDGET"], default = "1K", device_data.MAIN_QUEUE_UPLOAD_BYTES
    device_data.MAIN_QUEUE_UPLOAD_BYTES = main_queue_bytes
    try:
        loop = TrainLoop(model, devices, batch, batches=BATCHES, lookahead=lookahead)
    finally:
        del os.environ["HETCL_DATA_BUDGET"]
        device_data.MAIN_QUEUE_UPLOAD_BYTES = default
    assert all(isinstance(loop.rt.resident_sets.get(d, loop.images, loop.labels, 0.3, 0.3),
                          device_data.Streamed) for d in loop.rt.devices)
    return loop


def loops(model, devices, batch):
    """{name: TrainLoop}: resident, streamed as by default, streamed without the rows gathered
    ahead, streamed on the copy queue whatever the size, resident with flip-crop."""
    out = {"resident": TrainLoop(model, devices, batch, batches=BATCHES),
           "streamed": streamed(model, devices, batch, device_data.MAIN_QUEUE_UPLOAD_BYTES),
           "streamed, rows gathered at the step": streamed(
               model, devices, batch, device_data.MAIN_QUEUE_UPLOAD_BYTES, lookahead=False),
           "streamed, copy queue": streamed(model, devices, batch, 0)}
    out["resident, flip-crop"] = TrainLoop(model, devices, batch, batches=BATCHES,
                                           augment=Augment(4, True, seed=0, epoch=0))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", default="gpu")
    ap.add_argument("--model", default="lenet5", choices=sorted(INPUT_SHAPES))
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--steps", type=int, default=50)
    args = ap.parse_args()
    configs = loops(args.model, args.devices, args.batch)
    rates = {name: [] for name in configs}
    for _ in range(args.rounds):
        for name, loop in configs.items():
            rates[name].append(loop.rate(args.steps))
    devices = ", ".join(str(d) for d in configs["resident"].rt.devices)
    print(f"{args.model}, batch {args.batch}, {args.rounds} rounds of >= {args.steps} steps "
          f"on {devices}\n")
    print("| data | images/s (median) | min-max | vs resident |\n|---|---:|---:|---:|")
    base = statistics.median(rates["resident"])
    for name, r in rates.items():
        med = statistics.median(r)
        print(f"| {name} | {med:.0f} | {min(r):.0f}-{max(r):.0f} | {med / base:.3f} |")


if __name__ == "__main__":
    main()
