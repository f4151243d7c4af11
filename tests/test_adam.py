"""Adam and AdamW on the devices (kernels/update.cl.mako adam_multi): against torch.optim from
the same weights on the same batches, a batch split over two uneven devices == one device, a
resumed run == an uninterrupted one (both buffers and the step count saved), checkpoints from
before the optimizer state had kinds, and one-line errors for bad settings."""
import numpy as np
import pytest

import hetcl
from conftest import DEVICES
from hetcl.backend.device import Device
from hetcl.errors import HetclError
from hetcl.model.models import mlp
from hetcl.optim import Adam, AdamW
from hetcl.training import checkpoint
from test_train import cfg, run, small_data  # noqa: F401  (fixture)

TOL = 1e-4


def against_torch(device, optimizer, kwargs, steps, seed, max_grad_norm=None):
    """LeNet-5 trained `steps` steps by hetcl and by torch.optim from the same weights on the
    same batches (torch clipping with clip_grad_norm_ where max_grad_norm is given); asserts the
    loss of every step within TOL and each tensor's difference at the end within 1% of the
    distance it moved: Adam's step is about lr * m / sqrt(v) whatever the gradient's size, so an
    element whose gradient is rounding noise (a dead ReLU's, ~1e-10 instead of 0) takes a
    fraction of a step in one implementation and not the other. -> torch's gradient norms."""
    torch = pytest.importorskip("torch")
    from test_torch import lenet5, t, torch_lenet5
    model, ref = lenet5().build(), torch_lenet5()
    with torch.no_grad():
        for p, v in zip(ref.parameters(), model.parameters().values()):
            p.copy_(t(v))
    opt = getattr(hetcl.optim, optimizer)(max_grad_norm=max_grad_norm, **kwargs)
    ref_opt = getattr(torch.optim, optimizer)(ref.parameters(), **kwargs)
    rt, rng, norms = hetcl.Runtime([device]), np.random.default_rng(seed), []
    for step in range(steps):
        x = rng.random((32, 1, 28, 28), dtype=np.float32)
        y = rng.integers(0, 10, 32)
        loss = rt.train_step(model, opt, x, y)
        ref_opt.zero_grad()
        ref_loss = torch.nn.functional.cross_entropy(ref(t(x)), torch.tensor(y))
        ref_loss.backward()
        if max_grad_norm:
            norms.append(float(torch.nn.utils.clip_grad_norm_(ref.parameters(), max_grad_norm)))
        ref_opt.step()
        assert abs(loss - ref_loss.item()) < TOL * ref_loss.item(), step
    start = lenet5().build().parameters()
    for (name, v), p in zip(model.parameters().items(), ref.parameters()):
        ref_v = p.detach().numpy()
        moved = np.linalg.norm(ref_v - start[name])
        assert moved > 1e-3, name
        assert np.linalg.norm(v - ref_v) < 0.01 * moved, name
        assert np.abs(v - ref_v).max() < kwargs["lr"], name  # no element a whole step apart
    return norms


@pytest.mark.parametrize("optimizer", ["Adam", "AdamW"])
def test_adam_matches_torch(device, optimizer):
    """20 steps of LeNet-5 with weight decay."""
    against_torch(device, optimizer, dict(lr=2e-3, weight_decay=0.05), 20, seed=7)


@pytest.mark.skipif(len(DEVICES) < 2, reason="needs two devices (POCL_DEVICES='pthread basic')")
def test_adam_two_uneven_devices_equal_one():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((64, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, 64)
    fresh = [Device(d.cl_device, dict(d.profile)) for d in DEVICES[:2]]
    out = []
    # the second device sits out steps 2 and 3 and rejoins with the others' parameters and
    # both Adam buffers
    splits = [[50, 14], [64, 0], [64, 0], [32, 32], [50, 14]]
    for devices, split in ((fresh[:1], [None] * 5), (fresh, splits)):
        model, opt, rt = mlp(seed=2).build(), AdamW(1e-3), hetcl.Runtime(devices)
        for step in range(5):
            rt.train_step(model, opt, x, y, split=split[step])
        out.append((model.parameters(), rt.optimizer_state(model)))
    (p1, s1), (p2, s2) = out
    assert sorted(s1) == sorted(s2) and len(s1) == 2 * len(p1)
    for k in p1:
        assert np.abs(p1[k] - p2[k]).max() <= 1e-5 * max(1.0, np.abs(p1[k]).max()), k


def test_adam_resume_equals_uninterrupted(small_data, tmp_path):  # noqa: F811
    const = dict(lr_schedule="constant", warmup_epochs=0.0, optimizer="adam", lr=1e-3)
    full, _ = run(cfg(small_data, epochs=2, **const))
    run(cfg(small_data, tmp_path, epochs=1, **const))
    resumed, history = run(cfg(small_data, tmp_path, epochs=2, resume=True, override=True,
                                 **const))
    assert [h["epoch"] for h in history] == [1, 2] and resumed.opt.steps == full.opt.steps
    a, b = full.model.parameters(), resumed.model.parameters()
    assert max(np.abs(a[k] - b[k]).max() for k in a) <= 1e-6
    _, state, _ = checkpoint.load(str(tmp_path / "ckpt"))
    assert sorted(state) == sorted(f"{kind}:{k}" for kind in ("exp_avg", "exp_avg_sq")
                                   for k in a)


def test_momentum_of_older_checkpoints_is_read(tmp_path):
    """Formats 1 and 2 keyed SGD's momentum by the parameter's name alone."""
    params = {"dense0.weight": np.ones((2, 3), np.float32)}
    meta = {"epoch": 1, "step": 0, "optimizer_steps": 4}
    checkpoint.save(str(tmp_path), params, {"dense0.weight": np.full((2, 3), 0.5, np.float32)},
                    meta)
    path = tmp_path / "meta.json"
    path.write_text(path.read_text().replace('"format": 3', '"format": 2'))
    _, state, meta = checkpoint.load(str(tmp_path))
    assert meta["format"] == 2 and list(state) == ["momentum:dense0.weight"]
    assert np.array_equal(state["momentum:dense0.weight"], np.full((2, 3), 0.5))


def test_bad_adam_settings_are_one_line_errors(small_data):  # noqa: F811
    for bad in (dict(lr=0), dict(betas=(1.0, 0.9)), dict(eps=0), dict(weight_decay=-1),
                dict(lr=float("nan"))):
        with pytest.raises(HetclError, match="Adam needs lr > 0"):
            Adam(**bad)
    with pytest.raises(HetclError, match="--nesterov is SGD's"):
        run(cfg(small_data, optimizer="adam", nesterov=True))
    with pytest.raises(HetclError, match="unknown optimizer 'rmsprop'"):
        run(cfg(small_data, optimizer="rmsprop"))
