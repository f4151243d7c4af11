#!/usr/bin/env python3
"""Benchmark (not a test): GFLOP/s of CPU GEMM register blocks (rows x columns of C per
work-item, vector width) on the GEMM shapes of LeNet-5 and the MLP and at 1024^3, in one
process; the block GemmParams.cpu_block picks for the device is marked.

    python tools/bench_gemm_blocks.py [--device 0]
"""
import argparse

import numpy as np


from hetcl.measure.bench import median_time  # noqa: E402
from hetcl.backend.buffers import empty, to_device  # noqa: E402
from hetcl.codegen.gemm import Gemm  # noqa: E402
from hetcl.codegen.gemm import GemmParams  # noqa: E402
from hetcl.backend.device import select_devices  # noqa: E402

BLOCKS = ((8, 32, 16), (8, 32, 8), (6, 16, 8), (4, 24, 8), (6, 24, 8), (4, 32, 8))
# (m, n, k, trans_a, trans_b): conv1 forward, weight and input gradients, dense layers, square
SHAPES = ((6, 200704, 25, False, False), (16, 150, 25600, False, True),
          (150, 25600, 16, True, False), (256, 120, 400, False, False),
          (256, 256, 784, False, False), (1024, 1024, 1024, False, False))


def params(shape, block):
    rows, cols, width = block
    stacked = 16 if shape[0] >= 128 and shape[2] >= 128 else 1  # as GemmParams.for_shape
    return GemmParams(MWG=rows * stacked, NWG=cols, KWG=128, MDIMC=stacked, NDIMC=1,
                      VWN=width, USE_LOCAL=0)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="0")
    device = select_devices(ap.parse_args().device)[0]
    chosen = GemmParams.cpu_block(device.features)
    print(f"{device.name} ({device.profile['platform']} {device.profile['driver_version']}), "
          f"vector width {device.features['vector_width']}; GFLOP/s, * = cpu_block's choice")
    rng = np.random.default_rng(0)
    for shape in SHAPES:
        m, n, k, ta, tb = shape
        a = to_device(device, rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32))
        b = to_device(device, rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32))
        c = empty(device, (m, n))
        cells = []
        for block in BLOCKS:
            op = Gemm(device, m, n, k, ta, tb, params=params(shape, block))
            gflops = op.flops() / median_time(lambda: op(a, b, c), 5) / 1e9
            cells.append(f"{block[0]}x{block[1]}/{block[2]}{'*' if block == chosen else ''} "
                         f"{gflops:.1f}")
        print(f"{m}x{n}x{k} {'T' if ta else 'N'}{'T' if tb else 'N'}: " + "  ".join(cells),
              flush=True)


if __name__ == "__main__":
    main()
