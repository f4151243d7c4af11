#!/usr/bin/env python3
"""Benchmark (not a test): host time of one kernel launch through hetcl vs the bare enqueue.

Launches one small GEMM `--launches` times with the same arguments (as a training step repeats
its launches) and prints microseconds per launch for hetcl's Gemm call and for pyopencl's
enqueue_nd_range_kernel alone on the same kernel; the device work is tiny, so this is host time.

    python tools/bench_launch.py --devices 0
"""
import argparse
import time

import pyopencl as cl


from hetcl.backend.buffers import empty  # noqa: E402
from hetcl.codegen.gemm import Gemm  # noqa: E402
from hetcl.backend.device import select_devices  # noqa: E402


def per_launch(run, device, n):
    run()
    device.queue.finish()
    start = time.perf_counter()
    for _ in range(n):
        run()
    elapsed = time.perf_counter() - start
    device.queue.finish()
    return elapsed / n * 1e6


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--devices", default="0")
    ap.add_argument("--launches", type=int, default=3000)
    args = ap.parse_args()
    for device in select_devices(args.devices):
        g = Gemm(device, 8, 8, 8)
        a, b, c = (empty(device, (8, 8)).fill(1.0) for _ in range(3))
        hetcl_us = per_launch(lambda: g(a, b, c), device, args.launches)
        bare_us = per_launch(lambda: cl.enqueue_nd_range_kernel(
            device.queue, g.kernel, g.global_size, g.local_size), device, args.launches)
        plain = cl.CommandQueue(device.context, device.cl_device)  # no profiling
        plain_us = per_launch(lambda: cl.enqueue_nd_range_kernel(
            plain, g.kernel, g.global_size, g.local_size), device, args.launches)
        other = cl.enqueue_marker(device.copy_queue)
        waiting_us = per_launch(lambda: cl.enqueue_nd_range_kernel(
            device.queue, g.kernel, g.global_size, g.local_size, wait_for=[other]), device,
            args.launches)
        print(f"{device}: hetcl Gemm call {hetcl_us:.1f} us, bare enqueue {bare_us:.1f} us, "
              f"on a queue without profiling {plain_us:.1f} us, waiting on an event of the "
              f"copy queue {waiting_us:.1f} us per launch")


if __name__ == "__main__":
    main()
