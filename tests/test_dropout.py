"""Dropout in models: the training step uses the mask of the counter-based generator (checked
against the numpy reference through a model's gradients), evaluation is the identity, the masks
do not depend on how the batch is split over devices, and a resumed run draws the masks of the
uninterrupted one."""
import numpy as np
import pytest

import hetcl
from conftest import DEVICES
from hetcl.backend.device import Device
from hetcl.codegen.probes.dropout import dropout_mask
from hetcl.layers import Conv2D, Dense, Dropout, Flatten, ReLU
from reference import softmax_ce

P = 0.4


def net(seed=0):
    return hetcl.Sequential([Conv2D(1, 4, 3), ReLU(), Dropout(P), Flatten(), Dense(4 * 5 * 5, 12),
                             ReLU(), Dropout(0.2), Dense(12, 3)],
                            seed=seed, input_shape=(1, 7, 7)).build()


def batch(n, seed):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, 1, 7, 7)).astype(np.float32), rng.integers(0, 3, n)


def test_training_uses_the_reference_mask(device):
    model = hetcl.Sequential([Dense(6, 5), Dropout(P), Dense(5, 3)], seed=4,
                             input_shape=(6,)).build()
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((7, 6)).astype(np.float32), rng.integers(0, 3, 7)
    loss, grads = hetcl.Runtime([device]).gradients(model, x, y)
    p = {k: v.astype(np.float64) for k, v in model.parameters().items()}
    layer = model.nodes[2].layer
    keep = dropout_mask(4, layer.key(), 0, 0, 7, 5, P)
    h = x @ p["dense0.weight"].T + p["dense0.bias"]
    d = h * keep / (1 - P)
    logits = d @ p["dense1.weight"].T + p["dense1.bias"]
    ref_loss, dlogits = softmax_ce(logits, y, 7)
    assert abs(loss - ref_loss) < 1e-5 * ref_loss
    dh = (dlogits @ p["dense1.weight"]) * keep / (1 - P)
    assert np.allclose(grads["dense1.weight"], dlogits.T @ d, atol=1e-6)
    assert np.allclose(grads["dense0.weight"], dh.T @ x, atol=1e-6)


def test_evaluation_is_the_identity(device):
    model = net(seed=1)
    plain = hetcl.Sequential([layer for layer in (n.layer for n in model.nodes[1:])
                              if not isinstance(layer, Dropout)], input_shape=(1, 7, 7)).build()
    plain.load_parameters(model.parameters())
    x, _ = batch(5, 2)
    rt = hetcl.Runtime([device])
    assert np.array_equal(rt.forward(model, x), rt.forward(plain, x))


@pytest.mark.skipif(len(DEVICES) < 2, reason="needs two devices (POCL_DEVICES='pthread basic')")
def test_masks_do_not_depend_on_the_split():
    fresh = [Device(d.cl_device, dict(d.profile)) for d in DEVICES[:2]]
    out = []
    for devices, split in ((fresh[:1], None), (fresh, [11, 5])):
        model, rt = net(seed=3), hetcl.Runtime(devices)
        opt = hetcl.optim.SGD(lr=0.1, momentum=0.9)
        for step in range(6):
            rt.train_step(model, opt, *batch(16, 10 + step), split=split)
        out.append(model.parameters())
    for name in out[0]:
        assert np.allclose(out[1][name], out[0][name], rtol=0, atol=1e-5), name


def test_a_resumed_run_draws_the_same_masks(device):
    def train(model, opt, rt, steps):
        for step in steps:
            rt.train_step(model, opt, *batch(8, 30 + step))
    model, opt = net(seed=5), hetcl.optim.SGD(lr=0.1, momentum=0.9)
    train(model, opt, hetcl.Runtime([device]), range(4))
    half, opt2 = net(seed=5), hetcl.optim.SGD(lr=0.1, momentum=0.9)
    rt = hetcl.Runtime([device])
    train(half, opt2, rt, range(2))
    resumed, opt3 = net(seed=5), hetcl.optim.SGD(lr=0.1, momentum=0.9)
    resumed.load_parameters(half.parameters())
    rt3 = hetcl.Runtime([device])
    rt3.load_optimizer_state(resumed, rt.optimizer_state(half))
    opt3.steps = opt2.steps
    train(resumed, opt3, rt3, range(2, 4))
    for name, v in model.parameters().items():
        assert np.array_equal(resumed.parameters()[name], v), name


def test_bad_p_is_a_clear_error():
    with pytest.raises(hetcl.errors.HetclError, match="0 <= p < 1"):
        Dropout(1.0)
