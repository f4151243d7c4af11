"""The optimizers of the public API (``hetcl.optim.SGD``, ``Adam``, ``AdamW``); they live in hetcl/model/optim.py."""
from .model.optim import OPTIMIZERS, SCHEDULES, SGD, Adam, AdamW, scheduled_lr

__all__ = ["Adam", "AdamW", "OPTIMIZERS", "SCHEDULES", "SGD", "scheduled_lr"]
