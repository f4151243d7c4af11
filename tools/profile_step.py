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
import sys
import time

import numpy as np


from hetcl.parallel import runtime
from hetcl.measure.bench import INPUT_SHAPES, cpu_model, random_data
from hetcl.backend.device import event_seconds
from hetcl.model.models import build_model
from hetcl.model.optim import SGD
from hetcl.parallel.trace import Tracer


class StepPhases(Tracer):
    """The host's phases and, from measured exchanges, each device's timeline (medians later).
    Measured steps (the first 20, then every Runtime.measure_every-th) wait for every read:
    their exchange is kept apart."""

    def __init__(self):
        self.host, self.dev, self.last_start = {}, [], []

    def start(self, devices):
        """Tables for this many devices."""
        self.host = {"enqueue+loss": [], "exchange": [], "exchange, measured steps": [],
                     "update": [], "one layer's sum enqueued on one device": [],
                     "batch norm sums per step": []}
        self.dev = [{"compute": [], "busy": [], "last read": [], "last upload": [],
                     "period": []} for _ in range(devices)]
        self.last_start, self.steps, self._exchange = [None] * devices, 0, 0.0
        self._batch_sums = 0.0

    def clear(self):
        for table in [self.host] + self.dev:
            for v in table.values():
                v.clear()

    def phase(self, name, seconds, measured=False, **info):
        if name == "exchange":
            self._exchange = seconds
            self.host["exchange, measured steps" if measured else "exchange"].append(seconds)
        elif name == "step":
            self.steps += 1
            if not measured:
                self.host["enqueue+loss"].append(seconds - self._exchange)
            if self._batch_sums:
                self.host["batch norm sums per step"].append(self._batch_sums)
            self._batch_sums = 0.0
        elif name == "batch sums":  # (the host waits for the devices' parts in there)
            self._batch_sums += seconds
        elif name == "sum":  # (an enqueue that blocks on a peer's event shows here)
            self.host["one layer's sum enqueued on one device"].append(seconds)
        elif name == "update":
            self.host["update"].append(seconds)

    def exchanged(self, runs, times, firsts):
        for d, (run, first) in enumerate(zip(runs, firsts)):
            # The uploads are left in flight, and an event's times exist once it has run.
            for event in run.uploads:
                event.wait()
            start = first.profile.start
            ms = lambda e: event_seconds(e, first) * 1e3  # noqa: E731
            table = self.dev[d]
            table["compute"].append(ms(run.last_kernel))
            table["busy"].append(times[d][0] * 1e3)
            table["last read"].append(ms(run.reads[-1].event))
            table["last upload"].append(max(map(ms, run.uploads)))
            if self.last_start[d] is not None:  # per step (measured steps may be 8 apart)
                table["period"].append((start - self.last_start[d][0]) * 1e-6 /
                                       (self.steps + 1 - self.last_start[d][1]))
            self.last_start[d] = (start, self.steps + 1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", default="all")
    ap.add_argument("--model", default="cifar-cnn", choices=sorted(INPUT_SHAPES))
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--steps", type=int, default=30)
    args = ap.parse_args()

    tracer = StepPhases()
    rt = runtime.Runtime(args.devices, tracer=tracer)
    k = len(rt.devices)
    tracer.start(k)
    if k < 2:
        sys.exit("profile_step needs at least two devices")
    split = [args.batch_size // k] * k
    split[0] += args.batch_size - sum(split)
    images, labels, batches = random_data(args.model, args.batch_size, 4)
    model = build_model(args.model, INPUT_SHAPES[args.model], 10, 0)
    opt = SGD(0.01, 0.9)
    host, dev = tracer.host, tracer.dev

    total = 5 + args.steps
    for i in range(total):
        if i == 5:
            for d in rt.devices:
                d.queue.finish()
            tracer.clear()
            t0 = time.perf_counter()
        feed = rt.resident_sets.feed(images, labels, batches[i % 4], 0.3, 0.3)
        rt.apply_update(model, opt,
                        rt.step_on_devices(model, args.batch_size, feed, split=split)[1])
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
