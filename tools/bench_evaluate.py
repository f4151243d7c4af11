#!/usr/bin/env python3
"""Benchmark (not a test): evaluation (Runtime.evaluate_indices) of random 28x28 images in
batches on one device, each batch's logits read without waiting (ResidentSets.predict,
READS_IN_FLIGHT), beside the host waiting for each batch's logits before it enqueues the next
batch; alternating runs of one process, which must predict the same classes.

    python tools/bench_evaluate.py --devices 1 --model lenet5

Prints the median time of each way and the images/s.
"""
import argparse
import statistics
import time

import numpy as np

import hetcl
from hetcl.engine.resident_sets import ResidentSets
from hetcl.model.models import build_model


def waiting_predict(sets, ex, images, labels, mean=0.0, std=1.0):
    """The baseline: the host waits for each batch's logits before the next batch."""
    data = sets.get(ex.replica.device, images, labels, mean, std)
    preds = []
    for start in range(0, len(images), ex.n):
        idx = np.arange(start, start + ex.n, dtype=np.int32)
        idx[idx >= len(images)] = len(images) - 1
        ex.gather(data, idx)
        preds.append(ex.forward().get().argmax(axis=1)[:len(images) - start])
    return np.concatenate(preds)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", default="0")
    ap.add_argument("--model", default="lenet5", choices=["lenet5", "mlp", "resnet20"])
    ap.add_argument("--images", type=int, default=10000)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (args.images, 1, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, args.images).astype(np.uint8)
    model = build_model(args.model, (1, 28, 28), 10, 0)
    rt = hetcl.Runtime(args.devices)
    ways = {"waits for each batch": waiting_predict, "reads in flight": ResidentSets.predict}
    seconds = {name: [] for name in ways}
    for _ in range(args.rounds):
        preds = []
        for name, predict in ways.items():
            ResidentSets.predict = predict
            start = time.perf_counter()
            preds.append(rt.evaluate_indices(model, images, labels, 0.3, 0.3, args.batch))
            seconds[name].append(time.perf_counter() - start)
        assert np.array_equal(*preds)
    print(f"{args.model}, {args.images} images in batches of {args.batch}, {args.rounds} rounds "
          f"on {rt.inference_device()}")
    for name, s in seconds.items():
        med = statistics.median(s)
        print(f"  {name}: {med * 1e3:.1f} ms ({args.images / med:.0f} images/s)")


if __name__ == "__main__":
    main()
