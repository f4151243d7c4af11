#!/usr/bin/env python3
"""Benchmark (not a test): training images/s with the CPU defaults at the vector width the
device's compiler was proven to handle (the device feature "vector_width") against the same
defaults at other widths, in one process, timed in alternating windows.

    python tools/bench_vector_width.py [--device 0] [--models lenet5,mlp] [--widths 16,8,4]
                                       [--rounds 5] [--steps 40]

Each width gets its own Device object (with the feature overridden before anything is built),
so each configuration builds its own kernels; the tuning DB is left out (HETCL_CACHE_DIR of its
own, no shipped entries), so only the defaults are compared.
"""
import argparse
import os
import platform
import statistics
import tempfile

os.environ.setdefault("HETCL_CACHE_DIR", tempfile.mkdtemp(prefix="hetcl-vw-"))

from hetcl.measure.bench import TrainLoop  # noqa: E402
from hetcl.tuning import tunedb  # noqa: E402
from hetcl.backend.device import Device, select_devices  # noqa: E402


def device_at(base, width):
    device = Device(base.cl_device, dict(base.profile))
    device.features = dict(base.features, vector_width=width)
    return device


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="0")
    ap.add_argument("--models", default="lenet5,mlp")
    ap.add_argument("--widths", default="16,8,4")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=40)
    args = ap.parse_args()
    tunedb.SHIPPED = os.path.join(os.environ["HETCL_CACHE_DIR"], "none.json")
    base = select_devices(args.device)[0]
    proven = base.features["vector_width"]
    widths = [proven] + [int(w) for w in args.widths.split(",") if int(w) != proven]
    print(f"device: {base.name} ({base.profile['platform']} {base.profile['driver_version']}),"
          f" CPU: {platform.processor() or platform.machine()}; proven vector width {proven}")
    print("| model | vector width | images/s (median of rounds) | vs proven |")
    print("|---|---:|---:|---:|")
    for name in args.models.split(","):
        loops = {w: TrainLoop(name, [device_at(base, w)]) for w in widths}
        rates = {w: [] for w in widths}
        for r in range(args.rounds):
            order = widths if r % 2 == 0 else widths[::-1]
            for w in order:
                rates[w].append(loops[w].rate(args.steps))
        medians = {w: statistics.median(v) for w, v in rates.items()}
        for w in widths:
            print(f"| {name} | {w}{' (proven)' if w == proven else ''} | {medians[w]:.0f} | "
                  f"{medians[w] / medians[proven]:.3f} |")


if __name__ == "__main__":
    main()
