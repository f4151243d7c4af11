#!/usr/bin/env python3
"""Profile (not a test): the host side of training steps, with cProfile.

Times `--steps` steps of a model on the given device selection (after a warm-up that lets the
scheduler settle) and prints the wall time per step and the functions that took the most host
time. On a fast GPU small models are host-bound, so this is where their step time goes.

    python tools/profile_host.py --devices 0 --model lenet5
    python tools/profile_host.py --devices 0,cpu --model lenet5      # the scheduler drops the CPU
"""
import argparse
import cProfile
import pstats
import time


from hetcl.measure.bench import INPUT_SHAPES, random_data  # noqa: E402
from hetcl.model.models import build_model  # noqa: E402
from hetcl.model.optim import SGD  # noqa: E402
from hetcl.parallel.runtime import Runtime  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", default="all")
    ap.add_argument("--model", default="lenet5", choices=sorted(INPUT_SHAPES))
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=100)
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()

    images, labels, batches = random_data(args.model, args.batch_size, 8)
    model = build_model(args.model, INPUT_SHAPES[args.model], 10, 0)
    rt, opt = Runtime(args.devices), SGD(0.01, 0.9)

    def run(steps):  # as `hetcl train` does: each step's loss read after the next is enqueued
        last = None
        for i in range(steps):
            step = rt.train_step_indices(model, opt, images, labels, batches[i % 8], 0.3, 0.3,
                                         defer=True)
            if last is not None:
                last.get()
            last = step
        last.get()
        for d in rt.devices:
            d.queue.finish()

    run(args.warmup)
    start = time.perf_counter()
    run(args.steps)
    wall = (time.perf_counter() - start) / args.steps
    prof = cProfile.Profile()
    prof.enable()
    run(args.steps)
    prof.disable()
    print(f"{args.model} batch {args.batch_size} on {[str(d) for d in rt.devices]}, split "
          f"{rt.last_split}: {wall * 1e3:.3f} ms per step = {args.batch_size / wall:.0f} "
          f"images/s (without the profiler)")
    stats = pstats.Stats(prof)
    stats.sort_stats("tottime").print_stats(args.top)


if __name__ == "__main__":
    main()
