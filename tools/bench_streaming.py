#!/usr/bin/env python3
"""Benchmark (not a test): training images/s with the data set resident on the devices, beside
the same set streamed from host memory (forced over the data budget, HETCL_DATA_BUDGET): as by
default, its coming steps' rows uploaded ahead in chunks (hetcl/engine/chunks.py); in chunks of
one step; and with each step gathering and uploading its own rows (no upcoming steps given);
and beside resident data with `--augment flip-crop`; in alternating timed windows of one
process.

    python tools/bench_streaming.py --devices gpu --model lenet5 --batch 256 --rounds 7

Prints a markdown table: the median images/s of each configuration over the rounds, its ratio
to resident data and the host thread's CPU time per step (what bounds a LeNet-5 step on a GPU),
then the streamed/resident ratio of each round.
"""
import argparse
import os
import statistics

from hetcl.engine import chunks, device_data
from hetcl.engine.resident_sets import Augment
from hetcl.measure.bench import INPUT_SHAPES, TrainLoop

# Batches of random images in the data set: at batch 256 of 28x28, 51 MB as Fashion-MNIST's
# 47, so that the host's gather of a streamed step's rows reads main memory, not a cache.
BATCHES = 256


def streamed(model, devices, batch, lookahead=True, chunk_steps=chunks.CHUNK_STEPS):
    """A TrainLoop whose set streams (built and first used over budget); lookahead: each step
    passes the coming steps (upcoming), whose rows go up in chunks of up to chunk_steps steps
    (chunks.CHUNK_STEPS); else each step uploads its own rows (staging.Stage)."""
    os.environ["HETCL_DATA_BUDGET"], default = "1K", chunks.CHUNK_STEPS
    chunks.CHUNK_STEPS = chunk_steps  # read when the chunks are sized, at the first step
    try:
        loop = TrainLoop(model, devices, batch, batches=BATCHES, lookahead=lookahead)
    finally:
        del os.environ["HETCL_DATA_BUDGET"]
        chunks.CHUNK_STEPS = default
    assert all(isinstance(loop.rt.resident_sets.get(d, loop.images, loop.labels, 0.3, 0.3),
                          device_data.Streamed) for d in loop.rt.devices)
    return loop


def loops(model, devices, batch):
    """{name: TrainLoop}: resident, streamed in chunks as by default, in chunks of one step,
    streamed with each step's own upload, resident with flip-crop."""
    return {"resident": TrainLoop(model, devices, batch, batches=BATCHES),
            "streamed": streamed(model, devices, batch),
            "streamed, one step per chunk": streamed(model, devices, batch, chunk_steps=1),
            "streamed, each step's own upload": streamed(model, devices, batch,
                                                         lookahead=False),
            "resident, flip-crop": TrainLoop(model, devices, batch, batches=BATCHES,
                                             augment=Augment(4, True, seed=0, epoch=0))}


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
    host = {name: [] for name in configs}  # the host thread's CPU seconds per step
    ratios = []  # streamed / resident within each round (the same spell of the host)
    for _ in range(args.rounds):
        for name, loop in configs.items():
            rates[name].append(loop.rate(args.steps))
            host[name].append(loop.last_window[1])
        ratios.append(rates["streamed"][-1] / rates["resident"][-1])
    devices = ", ".join(str(d) for d in configs["resident"].rt.devices)
    print(f"{args.model}, batch {args.batch}, {args.rounds} rounds of >= {args.steps} steps "
          f"on {devices}\n")
    print("| data | images/s (median) | min-max | vs resident | host CPU per step (median) |\n"
          "|---|---:|---:|---:|---:|")
    base = statistics.median(rates["resident"])
    for name, r in rates.items():
        med = statistics.median(r)
        print(f"| {name} | {med:.0f} | {min(r):.0f}-{max(r):.0f} | {med / base:.3f} | "
              f"{statistics.median(host[name]) * 1e6:.0f} us |")
    print(f"\nstreamed / resident round by round: median {statistics.median(ratios):.3f} "
          f"({min(ratios):.3f}-{max(ratios):.3f})")

if __name__ == "__main__":
    main()
