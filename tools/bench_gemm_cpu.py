#!/usr/bin/env python3
"""Benchmark (not a test): GFLOP/s of CPU GEMM variants on resnet20's convolution GEMMs (batch
128) against the current default (GemmParams.for_shape) and numpy/OpenBLAS on the same shape.

Each GEMM is built as hetcl.engine.ops builds it (forward NN with its bias + ReLU epilogue,
weight gradient NT, input gradient TN, with the leading dimensions of the step's buffers);
variants alternate with the default in the same process, rounds times, in an order rotated
each round; each figure is the
median of 5 timed calls after a warm-up (OpenCL profiling events; numpy by the wall clock).

    OCL_ICD_VENDORS=/etc/OpenCL/vendors/pocl.icd POCL_DEVICES=pthread \\
        .venv/bin/python tools/bench_gemm_cpu.py [--device 0] [--rounds 2] [--only NN,NT,TN] \\
        [--variant "name:KWG=32,MWG=16,..."]... [--set small]

--variant takes GemmParams fields that replace those of the default for every shape (a field
that breaks a shape's rules skips that shape); the pseudo-field MWI=r sets MDIMC = MWG / r (r rows
per work-item).
"""
import argparse
import os
import time

import numpy as np

from hetcl.backend.buffers import empty, to_device
from hetcl.backend.device import select_devices
from hetcl.codegen.gemm import Gemm, GemmParams
from hetcl.measure.bench import median_time

from bench_gemm import time_numpy  # (tools/, the script's folder)

# (kind, m, n, k, trans_a, trans_b, lda, ldb, epilogue pixels): resnet20's three stages at batch
# 128 (stage 1 runs in chunks of 113 images; dz holds all 128: ldz = 128 * S)
SHAPES = (
    ("NN", 16, 115712, 144, False, False, None, None, 1024),
    ("NN", 32, 32768, 288, False, False, None, None, 256),
    ("NN", 64, 8192, 576, False, False, None, None, 64),
    ("NT", 16, 144, 115712, False, True, 131072, 115712, None),
    ("NT", 32, 288, 32768, False, True, 32768, 32768, None),
    ("NT", 64, 576, 8192, False, True, 8192, 8192, None),
    ("TN", 144, 115712, 16, True, False, None, 131072, None),
    ("TN", 288, 32768, 32, True, False, None, 32768, None),
    ("TN", 576, 8192, 64, True, False, None, 8192, None),
)
# --set small: the GEMMs of LeNet-5 and the MLP at batch 256 that take the skinny branch of
# for_shape with M a multiple of 8 (conv2's forward and weight gradient, dense input gradients)
SMALL = (
    ("NN", 16, 25600, 150, False, False, None, None, 100),
    ("NT", 16, 150, 25600, False, True, 25600, 25600, None),
    ("NN", 256, 400, 120, False, False, None, None, None),
    ("NN", 256, 120, 84, False, False, None, None, None),
    ("NN", 256, 84, 10, False, False, None, None, None),
    ("NN", 256, 128, 10, False, False, None, None, None),
)


def parse_variant(text):
    name, _, fields = text.partition(":")
    return name, {k.strip(): int(v) for k, v in (f.split("=") for f in fields.split(",") if f)}


def operands(device, shape, rng):
    kind, m, n, k, ta, tb, lda, ldb, _ = shape
    lda = lda or (m if ta else k)
    ldb = ldb or (k if tb else n)
    a = rng.standard_normal(((k if ta else m), lda)).astype(np.float32)
    b = rng.standard_normal(((n if tb else k), ldb)).astype(np.float32)
    x = (a[:, :m].T if ta else a[:, :k])
    y = (b[:, :k].T if tb else b[:, :n])
    return a, b, x, y


def build(device, shape, params):
    kind, m, n, k, ta, tb, lda, ldb, pixels = shape
    epi = ("relu", pixels) if pixels else None
    return Gemm(device, m, n, k, ta, tb, params=params, lda=lda, ldb=ldb, epilogue=epi)


def run_one(op, bufs, ref, bias):
    a, b, c = bufs
    kw = {"bias": bias} if op.epilogue else {}
    seconds = median_time(lambda: op(a, b, c, **kw), 5)
    out = c.get()
    if op.epilogue:  # NCHW back to [m, n]
        m, s = op.m, op.epilogue[1]
        out = out.reshape(-1, m, s).transpose(1, 0, 2).reshape(m, -1)
    err = float(np.abs(out - ref).max() / max(np.abs(ref).max(), 1e-30))
    return op.flops() / seconds / 1e9, err


def candidates(device, m, n, k, variants, ta=False, tb=False):
    """[(name, GemmParams)]: the default for the shape, then each variant that is valid."""
    base = GemmParams.for_shape(device.features, m, n, k, ta, tb)
    out = [("default", base)]
    for name, fields in variants:
        fields = dict(fields)
        mwi = fields.pop("MWI", None)  # rows per work-item: MDIMC follows MWG
        p = base.replace(**fields)
        if mwi:
            p = p.replace(MDIMC=max(1, p.MWG // mwi))
        if p.check() is None:
            out.append((name, p))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="0")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--only", default="NN,NT,TN")
    ap.add_argument("--shapes", default="", help="indices into SHAPES, e.g. 0,3")
    ap.add_argument("--variant", action="append", default=[])
    ap.add_argument("--set", choices=("resnet20", "small"), default="resnet20")
    args = ap.parse_args()
    shapes = SMALL if args.set == "small" else SHAPES
    device = select_devices(args.device)[0]
    variants = [parse_variant(v) for v in args.variant]
    print(f"{device.name}; load {open('/proc/loadavg').read().split()[:3]}; GFLOP/s "
          f"(default = for_shape; ratio to numpy in brackets)")
    rng = np.random.default_rng(0)
    picked = [int(i) for i in args.shapes.split(",")] if args.shapes else range(len(shapes))
    for idx in picked:
        shape = shapes[idx]
        if shape[0] not in args.only.split(","):
            continue
        kind, m, n, k = shape[:4]
        a, b, x, y = operands(device, shape, rng)
        ref = x @ y
        bias = None
        if shape[8]:
            ref = np.maximum(ref, 0)
            bias = to_device(device, np.zeros(m, np.float32))
        bufs = (to_device(device, a), to_device(device, b), empty(device, (m, n)))
        ops = [(name, build(device, shape, p))
               for name, p in candidates(device, m, n, k, variants, *shape[4:6])]
        results = {name: [] for name, _ in ops}
        np_g = []
        for r in range(args.rounds):
            # rotated each round: the first op after numpy's call runs slower (see below)
            for name, op in ops[r % len(ops):] + ops[:r % len(ops)]:
                g, err = run_one(op, bufs, ref, bias)
                if err > 1e-4:
                    name += f" (WRONG {err:.1e})"
                    results.setdefault(name, [])
                results[name].append(g)
            # numpy last: OpenBLAS's threads spin a while after a call, slowing what follows
            np_g.append(2.0 * m * n * k / time_numpy(x, y, False, False, 5) / 1e9)
            time.sleep(0.5)
        npb = max(np_g)
        cells = [f"{name} {max(v):.1f} [{max(v) / npb:.2f}]" for name, v in results.items() if v]
        print(f"{kind} {m}x{n}x{k}: numpy {npb:.1f} | " + " | ".join(cells), flush=True)
    print(f"load {open('/proc/loadavg').read().split()[:3]}")


if __name__ == "__main__":
    os.environ.setdefault("POCL_DEVICES", "pthread")
    main()
