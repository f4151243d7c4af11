#!/usr/bin/env python3
"""Merge tuning DBs brought back from a device (e.g. tools/gpu_tune.sh's tuning-MODEL.json)
into the shipped DB, hetcl/tuning/tuned.json: their entries replace the shipped ones of the
same device fingerprint, kernel and shape bucket; everything else is kept.

    python tools/merge_tuning.py /work/.device/3/tuning.json [more.json ...]
"""
import json
import os
import sys

SHIPPED = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
                       "hetcl", "tuning", "tuned.json")


def main(paths):
    with open(SHIPPED) as f:
        shipped = json.load(f)
    for path in paths:
        with open(path) as f:
            found = json.load(f)
        for fp, entry in found["devices"].items():
            into = shipped["devices"].setdefault(fp, {k: v for k, v in entry.items()
                                                      if k != "kernels"})
            for kernel, buckets in entry["kernels"].items():
                into.setdefault("kernels", {}).setdefault(kernel, {}).update(buckets)
                print(f"{path}: {entry.get('name', fp)} {kernel}: {len(buckets)} entries")
    with open(SHIPPED, "w") as f:
        json.dump(shipped, f, indent=1, sort_keys=True)
        f.write("\n")


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
