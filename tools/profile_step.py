#!/usr/bin/env python3
"""Profile (not a test): where the time of a multi-device training step goes.

Runs training steps of a model on the selected devices (at least two) with a fixed even split
and prints, as medians over the timed steps, the host's phases (enqueueing the step, waiting for
the loss, the gradient exchange, enqueueing the update) and, per device, from its own profiling
clock: compute (first kernel of the step to its last backward kernel), busy (the time its kernels
ran, which the scheduler uses), when its last gradient
read and upload ended, and the period from one step's first kernel to the next one's (period -
compute = time the device was not computing this step's forward/backward).

    python tools/profile_step.py --devices gpu --model cifar-cnn --batch-size 512 --steps 30
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from hetcl import comm, runtime  # noqa: E402
from hetcl.bench import INPUT_SHAPES, cpu_model, random_data  # noqa: E402
from hetcl.device import event_seconds  # noqa: E402
from hetcl.models import build_model  # noqa: E402
from hetcl.optim import SGD  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", default="all")
    ap.add_argument("--model", default="cifar-cnn", choices=sorted(INPUT_SHAPES))
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()

    rt = runtime.Runtime(args.devices)
    k = len(rt.devices)
    if k < 2:
        sys.exit("profile_step needs at least two devices")
    split = [args.batch_size // k] * k
    split[0] += args.batch_size - sum(split)
    images, labels, batches = random_data(args.model, args.batch_size, 4)
    model = build_model(args.model, INPUT_SHAPES[args.model], 10, 0)
    opt = SGD(0.01, 0.9)

    # (measured steps - the first 20, then every Runtime.measure_every-th - wait for every
    # read: timed apart)
    host = {"enqueue+loss": [], "exchange": [], "exchange, measured steps": [], "update": []}
    dev = [{"compute": [], "busy": [], "last read": [], "last upload": [], "period": []}
           for _ in range(k)]
    last_start = [None] * k
    reduce_orig = comm.GradientExchange.reduce

    def reduce_timed(self, world=None, measure=True):
        # A measured step records every kernel; its first is the step's gather kernel.
        firsts = [(run.device.kernel_events or [None])[0] for run in self.runs]
        t0 = time.perf_counter()
        out = reduce_orig(self, world, measure)
        host["exchange" if out is None else "exchange, measured steps"].append(
            time.perf_counter() - t0)
        if out is None:  # an unmeasured step (see Runtime.measure_every)
            return out
        for d, (run, first) in enumerate(zip(self.runs, firsts)):
            # The uploads are left in flight, and an event's times exist once it has run.
            for event in run.uploads:
                event.wait()
            start = first.profile.start
            ms = lambda e: event_seconds(e, first) * 1e3  # noqa: E731
            dev[d]["compute"].append(ms(run.last_kernel))
            dev[d]["busy"].append(out[d][0] * 1e3)
            dev[d]["last read"].append(ms(run.reads[-1].event))
            dev[d]["last upload"].append(max(map(ms, run.uploads)))
            if last_start[d] is not None:  # per step (measured steps may be 8 apart)
                dev[d]["period"].append((start - last_start[d][0]) * 1e-6 /
                                        (rt.steps - last_start[d][1]))
            last_start[d] = (start, rt.steps)
        return out
    comm.GradientExchange.reduce = reduce_timed
    sum_on_orig = comm.GradientExchange._sum_on
    host["one layer's sum enqueued on one device"] = []

    def sum_on_timed(self, *a, **kw):  # (an enqueue that blocks on a peer's event shows here)
        t0 = time.perf_counter()
        sum_on_orig(self, *a, **kw)
        host["one layer's sum enqueued on one device"].append(time.perf_counter() - t0)
    comm.GradientExchange._sum_on = sum_on_timed
    step_orig = runtime.Runtime._step

    def step_timed(self, *a, **kw):
        t0 = time.perf_counter()
        n_before = len(host["exchange"])
        out = step_orig(self, *a, **kw)
        if len(host["exchange"]) > n_before:  # (unmeasured steps only)
            host["enqueue+loss"].append(time.perf_counter() - t0 - host["exchange"][-1])
        return out
    runtime.Runtime._step = step_timed
    apply_orig = SGD.apply

    def apply_timed(self, rep):
        t0 = time.perf_counter()
        apply_orig(self, rep)
        host["update"].append(time.perf_counter() - t0)
    SGD.apply = apply_timed

    total = 5 + args.steps
    for i in range(total):
        if i == 5:
            for d in rt.devices:
                d.queue.finish()
            for table in [host] + dev:
                for v in table.values():
                    v.clear()
            t0 = time.perf_counter()
        idx = batches[i % 4]
        feed = lambda ex, a, b: ex.gather(
            rt.resident(ex.replica.device, images, labels, 0.3, 0.3), idx[a:b])
        rt._update(model, opt, rt._step(model, args.batch_size, feed, split=split)[1])
    for d in rt.devices:
        d.queue.finish()
    wall = (time.perf_counter() - t0) / args.steps * 1e3
    print(f"{args.model}, batch {args.batch_size} split {split}, {args.steps} steps; host: "
          f"{cpu_model()}")
    print(f"wall per step {wall:.2f} ms = {args.batch_size / wall * 1e3:.0f} images/s")
    print("host (ms): " + ", ".join(f"{name} {np.median(v) * 1e3:.2f}" for name, v in
                                      host.items() if v))
    for d, table in enumerate(dev):
        print(f"device {rt.devices[d].index} {rt.devices[d].name} (ms from its first kernel): " +
              ", ".join(f"{name} {np.median(v):.2f}" for name, v in table.items() if v))


if __name__ == "__main__":
    main()
