#!/usr/bin/env python3
"""Benchmark (not a test): training images/s of hetcl (as `hetcl bench` measures it) beside
PyTorch on the CPU with the same model, batch and optimizer, in the same process.

    python tools/bench_train.py [--devices all] [--models lenet5,mlp] [--batch 256] [--threads 2]

PyTorch trains on a random batch already in memory (no data loader), eager mode, float32;
hetcl gathers its batches from uint8 images resident on the devices, as `hetcl train` does.
"""
import argparse
import os
import time

import numpy as np


from hetcl.measure.bench import INPUT_SHAPES, train_throughput  # noqa: E402
from hetcl.model.models import build_model  # noqa: E402
from hetcl.backend.device import select_devices  # noqa: E402


def torch_model(name):
    """The PyTorch twin of hetcl's model `name` (tools/torch_twin.py), from the same weights."""
    from torch_twin import TorchTwin
    return TorchTwin(build_model(name, INPUT_SHAPES[name], 10, seed=0))


def torch_step_rate(torch, name, batch, steps, device="cpu", warmup=3):
    """Images/s of PyTorch eager training steps (SGD with momentum, cross-entropy) of the model
    on random data already on `device` ("cpu" or "cuda"; tools/cudnn_compare.py uses it too)."""
    model = torch_model(name).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn((batch,) + INPUT_SHAPES[name], device=device)
    y = torch.randint(0, 10, (batch,), device=device)
    loss_fn = torch.nn.CrossEntropyLoss()
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

    def step():
        opt.zero_grad()
        loss_fn(model(x), y).backward()
        opt.step()
    for _ in range(warmup):
        step()
    sync()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    sync()
    return steps * batch / (time.perf_counter() - start)


def torch_throughput(name, batch, steps, threads):
    import torch
    torch.set_num_threads(threads)
    return torch_step_rate(torch, name, batch, steps), torch.__version__


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", default="all")
    ap.add_argument("--models", default="lenet5,mlp")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2, help="PyTorch CPU threads")
    args = ap.parse_args()
    devices = select_devices(args.devices)
    names = ", ".join(f"{d.index}: {d.name} ({d.profile['driver_version']})" for d in devices)
    print(f"devices: {names}; load average {os.getloadavg()[0]:.1f}")
    print("| model | hetcl images/s | PyTorch CPU images/s | hetcl / PyTorch |")
    print("|---|---:|---:|---:|")
    for name in args.models.split(","):
        ours = train_throughput(name, devices, args.batch, args.steps)
        try:
            theirs, version = torch_throughput(name, args.batch, args.steps, args.threads)
        except ImportError:
            print(f"| {name} | {ours:.0f} | (torch not installed) | |")
            continue
        print(f"| {name} | {ours:.0f} | {theirs:.0f} | {ours / theirs:.2f} |", flush=True)
    print(f"batch {args.batch}, {args.steps} timed steps after 3 warm-up, PyTorch "
          f"{args.threads} threads, load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
