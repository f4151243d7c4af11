#!/usr/bin/env python3
"""PyTorch trained by `hetcl train`'s recipe: hetcl's test accuracy beside PyTorch's.

    hetcl train                  --model resnet20 --epochs 15 --batch-size 128 --lr 0.1 \\
        --optimizer sgd --momentum 0.9 --weight-decay 5e-4 --lr-schedule cosine \\
        --warmup-epochs 1 --seed 0
    python tools/torch_recipe.py --model resnet20 --epochs 15 --batch-size 128 --lr 0.1 \\
        --optimizer sgd --momentum 0.9 --weight-decay 5e-4 --lr-schedule cosine \\
        --warmup-epochs 1 --seed 0 [--device cuda] [--limit N]

The recipe's flags are `hetcl train`'s own (names, choices, help and defaults read from its
command and from TrainConfig), so the same flags give the same run: hetcl's model built with
the same seed (the same initial weights, copied into tools/torch_twin.py's TorchTwin), the same
data set and normalisation, the same batches in the same order (shuffled_batches), the same
learning rate at every step (scheduled_lr), torch.optim's SGD/Adam/AdamW with the same
hyper-parameters, clip_grad_norm_ where --max-grad-norm is given, the same divergence stop
(--max-loss), and the test accuracy after every epoch in eval mode. What differs is float32
rounding (other kernels, other summation orders), which grows over a run: compare accuracies,
not bits.

Float32 throughout, TF32 off; cudnn.benchmark on (the fastest cuDNN algorithms; the numbers
are the same up to rounding). The data set lives on the device as float tensors and batches
are gathered there. --limit N trains on the first N training images only (quick checks; hetcl
would take the same run on a data set of those N images: their own mean/std, N-image epochs).
Prints a line per epoch and, last, a one-line JSON summary; images_per_s is the last epoch's
(as `hetcl train`'s final line: the first one pays for cuDNN's autotuning).
"""
import argparse
import dataclasses
import json
import math
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from hetcl.errors import HetclError
from hetcl.model.models import build_model
from hetcl.model.optim import OPTIMIZERS, SGD, scheduled_lr
from hetcl.training import run_config
from hetcl.training.data import Dataset, check_input_shape, load_dataset, shuffled_batches
from torch_twin import TorchTwin

RECIPE = run_config.SETTINGS + ("data",)  # the TrainConfig fields that shape a run


def parser():
    """argparse twin of `hetcl train`'s options that shape the run, plus --device, --limit."""
    from hetcl.cli import train  # (imports click: only when a command line is parsed)
    defaults = {f.name: f.default for f in dataclasses.fields(run_config.TrainConfig)}
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    for option in train.params:
        if option.name not in RECIPE:
            continue
        # argparse formats help with %: hetcl's "50% and 75%" must be escaped
        kw = {"default": defaults[option.name], "help": (option.help or "").replace("%", "%%")}
        if option.is_flag:
            kw["action"] = "store_true"
        else:
            kw["type"] = {"integer": int, "float": float}.get(option.type.name, str)
            kw["choices"] = getattr(option.type, "choices", None)
        ap.add_argument(*option.opts, **kw)
    ap.add_argument("--device", choices=("cpu", "cuda"),
                    default="cuda" if torch.cuda.is_available() else "cpu",
                    help="PyTorch's device (default: cuda where available).")
    ap.add_argument("--limit", type=int, default=None, metavar="N",
                    help="Train on the first N training images only (quick checks); the test "
                         "set stays whole.")
    return ap


def config(args):
    """The TrainConfig that `hetcl train` would run with these flags (checked as it checks)."""
    cfg = run_config.with_defaults(run_config.TrainConfig(
        **{name: getattr(args, name) for name in RECIPE}))
    run_config.check(cfg)
    # hetcl's optimizer refuses what Trainer would refuse (e.g. --nesterov without momentum)
    if cfg.optimizer == "sgd":
        SGD(cfg.lr, cfg.momentum, cfg.weight_decay, cfg.nesterov, cfg.max_grad_norm)
    else:
        OPTIMIZERS[cfg.optimizer](cfg.lr, weight_decay=cfg.weight_decay,
                                  max_grad_norm=cfg.max_grad_norm)
    if args.limit is not None and args.limit < 1:
        raise HetclError(f"--limit must be at least 1 (got {args.limit})")
    return cfg


def dataset(cfg, limit):
    data = load_dataset(cfg.data)
    if limit:  # as hetcl on a data set of these images: Dataset computes their mean/std
        data = Dataset(data.name, data.train_x[:limit], data.train_y[:limit], data.test_x,
                       data.test_y, data.classes)
    return data


def on_device(images, labels, data, input_shape, device):
    """Images as the gather kernel makes them, x = v*scale + shift with its float32 scale =
    1/(255 std) and shift = -mean/std (folded in float64), in the model's input shape."""
    scale = float(np.float32(1.0 / (255.0 * data.std)))
    shift = float(np.float32(-data.mean / data.std))
    x = torch.from_numpy(images).to(device).float() * scale + shift
    return x.reshape((-1,) + tuple(input_shape)), torch.from_numpy(labels).to(device).long()


def optimizer(cfg, params):
    """torch.optim's twin of hetcl's (optim.py: PyTorch's semantics; Adam's betas and eps are
    PyTorch's defaults in both). The learning rate is set before every step."""
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay, nesterov=cfg.nesterov)
    kind = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW}[cfg.optimizer]
    return kind(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def step_plan(cfg, n, epoch):
    """[(learning rate, batch indices)] of an epoch's steps, as Trainer._epoch takes them."""
    batches = shuffled_batches(n, cfg.batch_size, cfg.seed, epoch)
    return [(scheduled_lr(cfg.lr_schedule, cfg.lr, epoch, i, len(batches), cfg.epochs,
                          cfg.warmup_epochs), idx) for i, idx in enumerate(batches)]


def _later(t):
    """t copied to the host without waiting: read by _now once the next step is enqueued, so
    the device never idles for the host (hetcl's defer=True does the same)."""
    if not t.is_cuda:
        return t, None
    host = t.to("cpu", non_blocking=True)  # (into pinned memory)
    done = torch.cuda.Event()
    done.record()
    return host, done


def _now(pending):
    host, done = pending
    if done is not None:
        done.synchronize()
    return host.tolist()


def _step(twin, opt, cfg, x, y, lr):
    """One training step; -> its [mean loss, correct count], still on the device."""
    for group in opt.param_groups:
        group["lr"] = lr
    out = twin(x)
    loss = F.cross_entropy(out, y)  # hetcl's: softmax cross-entropy, the batch's mean
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if cfg.max_grad_norm is not None:
        torch.nn.utils.clip_grad_norm_(twin.parameters(), cfg.max_grad_norm)
    opt.step()
    return torch.stack([loss.detach(), (out.argmax(1) == y).sum().float()])


def _account(totals, pending, epoch, max_loss):
    """A step's loss and accuracy into the epoch's totals; stops (SystemExit) where hetcl's run
    would: a NaN, an Inf or a loss above max_loss (--max-loss)."""
    step, size, result = pending
    loss, correct = _now(result)
    if not math.isfinite(loss) or loss > max_loss:
        raise SystemExit(f"torch_recipe: the loss reached {loss:.4g} at epoch {epoch + 1} step "
                         f"{step + 1} (hetcl train stops at a NaN, an Inf or above "
                         f"{max_loss:.4g}, --max-loss)")
    totals["loss"] += loss * size
    totals["correct"] += correct
    totals["seen"] += size


def train_epoch(twin, opt, cfg, train, epoch, max_loss):
    """-> the epoch's {train_loss, train_acc, images_per_s, seconds, lr (first, last), steps,
    last_batch}."""
    x, y = train
    plan = step_plan(cfg, len(x), epoch)
    # the epoch's indices go to the device at once; each step takes its slice of them
    order = torch.from_numpy(np.concatenate([idx for _, idx in plan])).to(x.device).long()
    twin.train()
    start, at, pending = time.perf_counter(), 0, None
    totals = {"loss": 0.0, "correct": 0.0, "seen": 0}
    for i, (lr, idx) in enumerate(plan):
        rows = order[at:at + len(idx)]
        at += len(idx)
        result = _later(_step(twin, opt, cfg, x[rows], y[rows], lr))
        if pending:  # the step before, read while this one runs
            _account(totals, pending, epoch, max_loss)
        pending = (i, len(idx), result)
    _account(totals, pending, epoch, max_loss)
    seconds = time.perf_counter() - start
    seen = totals["seen"]
    return {"train_loss": totals["loss"] / seen, "train_acc": totals["correct"] / seen,
            "images_per_s": seen / max(seconds, 1e-9), "seconds": seconds,
            "lr": (plan[0][0], plan[-1][0]), "steps": len(plan), "last_batch": len(plan[-1][1])}


@torch.no_grad()
def test_accuracy(twin, test, batch_size):
    """Accuracy on the test set in eval mode (batch norm's running statistics), in batches of
    --batch-size as hetcl's evaluate_indices."""
    x, y = test
    twin.eval()
    correct = sum(int((twin(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size]).sum())
                  for i in range(0, len(x), batch_size))
    return correct / len(x)


def run(cfg, limit, device):
    """Train by cfg's recipe on `device`; -> the JSON summary (a line per epoch printed)."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = True
    data = dataset(cfg, limit)
    model = build_model(cfg.model, data.sample_shape, data.classes, cfg.seed)
    check_input_shape(data, model.input_shape)
    twin = TorchTwin(model).to(device)
    train = on_device(data.train_x, data.train_y, data, model.input_shape, device)
    test = on_device(data.test_x, data.test_y, data, model.input_shape, device)
    opt = optimizer(cfg, twin.parameters())
    print(f"training {cfg.model} on {data.name} ({len(data.train_x)} images) with PyTorch "
          f"{torch.__version__} on {device}", file=sys.stderr)
    accs, epoch_stats = [], None
    for epoch in range(cfg.epochs):
        epoch_stats = train_epoch(twin, opt, cfg, train, epoch,
                                  run_config.max_loss(cfg, data.classes))
        accs.append(test_accuracy(twin, test, cfg.batch_size))
        s = epoch_stats
        print(f"epoch {epoch + 1}/{cfg.epochs}: train loss {s['train_loss']:.4f}, train acc "
              f"{100 * s['train_acc']:.2f}%, test acc {100 * accs[-1]:.2f}%, "
              f"{s['images_per_s']:.0f} images/s, {s['steps']} steps (last batch "
              f"{s['last_batch']}), lr {s['lr'][0]:.6g} .. {s['lr'][1]:.6g}", flush=True)
    return {"framework": "pytorch", "model": cfg.model, "epochs": cfg.epochs,
            "final_test_acc": accs[-1], "best_test_acc": max(accs),
            "images_per_s": epoch_stats["images_per_s"], "device": _device_name(device),
            "torch": torch.__version__,
            "cudnn": torch.backends.cudnn.version() if device == "cuda" else None,
            "tf32": False}


def _device_name(device):
    return torch.cuda.get_device_name() if device == "cuda" else "cpu"


def main(argv=None):
    args = parser().parse_args(argv)
    try:
        summary = run(config(args), args.limit, args.device)
    except HetclError as e:  # a setting or data problem: one line, as `hetcl train` says it
        raise SystemExit(f"torch_recipe: error: {e}") from None
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
