"""The optimizers of the public API (``hetcl.optim.SGD``); they live in hetcl/model/optim.py."""
from .model.optim import SCHEDULES, SGD, scheduled_lr

__all__ = ["SCHEDULES", "SGD", "scheduled_lr"]
