"""Global gradient-norm clipping (max_grad_norm, --max-grad-norm) as PyTorch's
clip_grad_norm_ before the optimizer's step: against torch with SGD and AdamW (the norm well
above the limit, so that every step clips), on two uneven devices as on one, and in hybrid mode
as in data mode (the norm counts one head and every slice)."""
import numpy as np
import pytest

import hetcl
from conftest import DEVICES
from hetcl.backend.device import Device
from hetcl.model.models import mlp
from hetcl.optim import SGD, AdamW
from test_adam import against_torch


# AdamW for 5 steps: Adam turns rounding-level gradients into whole steps (see test_adam.py),
# and with every step clipped the two trajectories part from the sixth step on (1e-5 there,
# 2e-4 by the tenth); SGD stays within 1e-6 over 10.
@pytest.mark.parametrize("optimizer,kwargs,steps", [("SGD", dict(lr=0.05, momentum=0.9), 10),
                                                    ("AdamW", dict(lr=2e-3, weight_decay=0.05), 5)])
def test_clipping_matches_torch(device, optimizer, kwargs, steps):
    norms = against_torch(device, optimizer, kwargs, steps, seed=9, max_grad_norm=0.25)
    assert min(norms) > 0.25  # every step clipped


def _two_device_runs(optimizer, mode, splits):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((64, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 64)
    fresh = [Device(d.cl_device, dict(d.profile)) for d in DEVICES[:2]]
    out = []
    for devices, parallel, split in ((fresh[:1], "data", [None]), (fresh, mode, splits)):
        model, opt = mlp(seed=4).build(), optimizer()
        rt = hetcl.Runtime(devices, parallel=parallel)
        for step in range(6):
            rt.train_step(model, opt, x, y, split=split[step % len(split)])
        out.append(model.parameters())
    return out


@pytest.mark.skipif(len(DEVICES) < 2, reason="needs two devices (POCL_DEVICES='pthread basic')")
@pytest.mark.parametrize("mode,splits", [("data", [[50, 14]]), ("hybrid", [[40, 24], [16, 48]])])
def test_clipping_on_two_devices_equals_one(mode, splits):
    for optimizer in (lambda: SGD(0.1, 0.9, max_grad_norm=0.5),
                      lambda: AdamW(1e-3, max_grad_norm=0.5)):
        one, two = _two_device_runs(optimizer, mode, splits)
        for k in one:
            assert np.abs(one[k] - two[k]).max() <= 1e-5 * max(1.0, np.abs(one[k]).max()), k


def test_bad_max_grad_norm_is_one_line():
    for bad in (0, -1, float("inf"), float("nan")):
        with pytest.raises(hetcl.HetclError, match="max_grad_norm must be a finite number"):
            SGD(0.1, max_grad_norm=bad)
