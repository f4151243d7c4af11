#!/usr/bin/env python3
"""Profile (not a test): what a multi-device runtime costs the best device when the scheduler
has given the others nothing (issue 5: `--devices all` must not be slower than the GPU alone).

In one process, in this order:
  1. the best device alone, timed in windows before any other device has run anything;
  2. a runtime of all the selected devices, warmed up until its split settles;
  3. windows of the one-device and the all-device runtime in alternation (ABBA order).
Per window: images/s, and the Python thread's CPU time per step (time.thread_time) against its
wall time per step - equal CPU time with a longer wall time means the host waited (for the
driver or the device), a longer CPU time means the same calls cost more.

    python tools/profile_gap.py --devices 0,cpu --model lenet5
    POCL_DEVICES="pthread basic" python tools/profile_gap.py --devices all --best 1 --model mlp
"""
import argparse
import statistics


from hetcl.measure.bench import INPUT_SHAPES, TrainLoop  # noqa: E402
from hetcl.backend.device import select_devices, share_contexts  # noqa: E402


def window(loop, steps):
    """-> (images/s, wall us per step, thread CPU us per step)"""
    rate = loop.rate(steps, min_seconds=0.0)
    wall, cpu = loop.last_window
    return rate, 1e6 * wall, 1e6 * cpu


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", default="all")
    ap.add_argument("--best", type=int, default=None,
                    help="index of the device to time alone (default: the first selected)")
    ap.add_argument("--model", default="lenet5", choices=sorted(INPUT_SHAPES))
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=1000, help="steps per window")
    ap.add_argument("--rounds", type=int, default=6)
    args = ap.parse_args()

    devices = select_devices(args.devices)
    share_contexts(devices)
    best = next((d for d in devices if d.index == args.best), devices[0])
    alone = TrainLoop(args.model, [best], args.batch_size)
    before = [window(alone, args.steps) for _ in range(2)]
    together = TrainLoop(args.model, devices, args.batch_size)
    rows = {"alone": [], "together": []}
    for r in range(args.rounds):
        order = [("alone", alone), ("together", together)]
        for name, loop in order if r % 2 == 0 else order[::-1]:
            rows[name].append(window(loop, args.steps))

    def fmt(ws):
        return ", ".join(f"{rate:.0f} ({w:.0f}/{c:.0f} us)" for rate, w, c in ws)
    print(f"{args.model} batch {args.batch_size}, {args.steps} steps a window; best device "
          f"{best}; together: {', '.join(str(d) for d in devices)}, split "
          f"{together.rt.last_split}")
    print(f"alone, before the others ran: {fmt(before)}")
    for name, ws in rows.items():
        print(f"{name:8s}: {fmt(ws)}")
    ratios = [t[0] / a[0] for a, t in zip(rows["alone"], rows["together"])]
    print(f"together / alone per round: {', '.join(f'{x:.3f}' for x in ratios)}; median "
          f"{statistics.median(ratios):.3f}; median thread CPU per step alone "
          f"{statistics.median(c for _, _, c in rows['alone']):.0f} us, together "
          f"{statistics.median(c for _, _, c in rows['together']):.0f} us")
    for m in together.messages:
        print(m)


if __name__ == "__main__":
    main()
