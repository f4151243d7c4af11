"""A training run's configuration: its values checked at the door, and what `--resume` keeps.

The settings (SETTINGS) define the run's numbers; a checkpoint stores them with the data set's
identity, and a resumed run takes them from it. A setting the user gives that differs from the
saved one is an error that lists every difference, unless `override` is set. The other fields
(devices, parallel mode, log, plot, ...) say how and where to run and may change on resume.
"""
import dataclasses
import hashlib
import math
import os

import numpy as np

from ..errors import HetclError

# The loss a run may reach before it counts as diverged, in units of the loss of a uniform
# guess, ln(classes): a learning network stays well below it, an exploding one passes it within
# a few steps (and a NaN or Inf always stops the run).
DIVERGENCE_FACTOR = 10.0


@dataclasses.dataclass
class TrainConfig:
    model: str = "lenet5"
    data: str = None
    epochs: int = 2
    batch_size: int = 256
    optimizer: str = "sgd"  # a name of optim.OPTIMIZERS
    lr: float = None  # None: DEFAULT_LR of the optimizer (with_defaults)
    # Defaults measured on Fashion-MNIST (docs/benchmarks.md, "Training throughput", the
    # accuracy runs).
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    max_grad_norm: float = None  # clip the gradients to this global L2 norm; None: no clipping
    lr_schedule: str = "cosine"
    warmup_epochs: float = 1.0
    seed: int = 0
    max_loss: float = None  # None: DIVERGENCE_FACTOR * ln(classes)
    image_size: int = None  # image folders: resize and centre-crop to this; None: as they are
    val_split: float = None  # hold out this fraction of the training set for validation
    augment: str = "none"  # a name of AUGMENTS
    strict: bool = False  # an image folder's unreadable file is an error, not a warning
    init: str = None  # a safetensors file of initial parameters (hetcl's or PyTorch's names)
    devices: str = "all"
    parallel: str = "data"  # or "hybrid", "auto" (runtime.Runtime)
    log: str = None
    log_every: str = "epoch"  # or "step"
    plot: str = None
    checkpoint: str = None
    resume: bool = False
    start_over: bool = False  # a run already in `checkpoint` is moved aside
    override: bool = False  # on resume, settings given here replace the saved ones
    progress: bool = True


SETTINGS = ("model", "epochs", "batch_size", "optimizer", "lr", "momentum", "weight_decay",
            "nesterov", "max_grad_norm", "lr_schedule", "warmup_epochs", "seed", "max_loss",
            "image_size", "val_split", "augment")
# --augment: (padding of the random crop in pixels, horizontal flip); flip-crop is the CIFAR
# recipe of He et al. 2016 (4 pixels, as torchvision's RandomCrop(32, padding=4)).
AUGMENTS = {"none": (0, False), "flip-crop": (4, True)}
# SGD's was measured on Fashion-MNIST (docs/benchmarks.md, the accuracy runs); Adam's and
# AdamW's are PyTorch's.
DEFAULT_LR = {"sgd": 0.1, "adam": 1e-3, "adamw": 1e-3}
FLAG = {name: "--" + name.replace("_", "-") for name in SETTINGS}


def _finite(value, low, name, high=math.inf, high_open=False):
    ok = isinstance(value, (int, float)) and math.isfinite(value) and value >= low and \
        (value < high if high_open else value <= high)
    if not ok:
        bound = f"below {high}" if high_open else (f"at most {high}" if high < math.inf else "")
        raise HetclError(f"{name} must be a finite number, at least {low} {bound}".rstrip() +
                         f" (got {value})")


def with_defaults(cfg):
    """The configuration with the optimizer's learning rate where none was given."""
    if cfg.lr is not None or cfg.optimizer not in DEFAULT_LR:
        return cfg
    return dataclasses.replace(cfg, lr=DEFAULT_LR[cfg.optimizer])


def check(cfg):
    """One-line HetclError for a value no run can use (before any data or device is touched)."""
    if cfg.optimizer not in DEFAULT_LR:
        raise HetclError(f"unknown optimizer {cfg.optimizer!r}: use one of "
                         f"{', '.join(DEFAULT_LR)}")
    if cfg.nesterov and cfg.optimizer != "sgd":
        raise HetclError(f"--nesterov is SGD's; --optimizer {cfg.optimizer} has no momentum "
                         f"buffer to look ahead with")
    if cfg.epochs < 1 or cfg.batch_size < 1:
        raise HetclError(f"--epochs and --batch-size must be at least 1 (got {cfg.epochs}, "
                         f"{cfg.batch_size})")
    _finite(cfg.lr, 0, "--lr")
    if cfg.lr <= 0:
        raise HetclError(f"--lr must be above 0 (got {cfg.lr})")
    _finite(cfg.momentum, 0, "--momentum", 1, high_open=True)
    _finite(cfg.weight_decay, 0, "--weight-decay")
    _finite(cfg.warmup_epochs, 0, "--warmup-epochs")
    if cfg.max_loss is not None:
        _finite(cfg.max_loss, 0, "--max-loss")
    if cfg.max_grad_norm is not None:
        _finite(cfg.max_grad_norm, 0, "--max-grad-norm")
        if cfg.max_grad_norm <= 0:
            raise HetclError(f"--max-grad-norm must be above 0 (got {cfg.max_grad_norm})")
    _check_data(cfg)
    if not 0 <= cfg.seed < 2 ** 63:
        raise HetclError(f"--seed must be between 0 and 2^63-1 (got {cfg.seed})")
    if cfg.resume and not cfg.checkpoint:
        raise HetclError("--resume needs --checkpoint DIR (where the run was saved)")
    if cfg.resume and cfg.start_over:
        raise HetclError("--resume continues the run in --checkpoint, --start-over moves it "
                         "aside: pass one of them")


def _check_data(cfg):
    if cfg.augment not in AUGMENTS:
        raise HetclError(f"unknown --augment {cfg.augment!r}: use one of {', '.join(AUGMENTS)}")
    if cfg.val_split is not None and not 0 < cfg.val_split < 1:
        raise HetclError(f"--val-split is the fraction of the training set held out: it must "
                         f"lie between 0 and 1 (got {cfg.val_split})")
    if cfg.init is not None and not os.path.isfile(cfg.init):
        raise HetclError(f"--init {cfg.init}: no such file (a .safetensors file of parameters)")
    if cfg.image_size is not None and not 4 <= cfg.image_size <= 4096:
        raise HetclError(f"--image-size must be 4..4096 pixels (got {cfg.image_size})")


def max_loss(cfg, classes):
    return cfg.max_loss if cfg.max_loss is not None else \
        DIVERGENCE_FACTOR * math.log(max(classes, 2))


def saved_settings(cfg):
    settings = {name: getattr(cfg, name) for name in SETTINGS}
    settings["data"] = os.path.abspath(cfg.data) if cfg.data else None
    return settings


def resumed(cfg, saved, given, where):
    """The configuration of a resumed run: the saved settings, with the given ones that differ
    an error listing them (or, with override, taking their place). The data path is the saved
    one unless given; whether the data is the same is checked by identity (data_identity)."""
    given = set(given) & set(SETTINGS)
    differ = [n for n in sorted(given) if n in saved and getattr(cfg, n) != saved[n]]
    if differ and not cfg.override:
        listed = ", ".join(f"{FLAG[n]} {getattr(cfg, n)} (saved: {saved[n]})" for n in differ)
        them = "it" if len(differ) == 1 else "them"
        raise HetclError(f"--resume continues the run saved in {where}, but {listed}; drop "
                         f"the flag{'s' * (len(differ) > 1)} to continue the run as it was, or "
                         f"add --override to change {them}")
    keep = {n: saved[n] for n in SETTINGS if n in saved and not (cfg.override and n in given)}
    if not cfg.data and saved.get("data"):
        keep["data"] = saved["data"]
    return dataclasses.replace(cfg, **keep)


def data_identity(dataset):
    """What makes a data set the same one: its name, sizes, shape, classes and a checksum of
    every image and label (a fraction of a second for Fashion-MNIST)."""
    h = hashlib.sha256()
    for a in (dataset.train_x, dataset.train_y, dataset.test_x, dataset.test_y,
              *((dataset.val_x, dataset.val_y) if dataset.val_x is not None else ())):
        h.update(np.ascontiguousarray(a).data)
    return {"name": dataset.name, "train": len(dataset.train_x), "test": len(dataset.test_x),
            "sample_shape": list(dataset.sample_shape), "classes": dataset.classes,
            "sha256": h.hexdigest()}
