"""SGD (plain, momentum, Nesterov, weight decay; several steps) and y = a*x + b*y against
tests/reference.py on every device, over sizes that are multiples of nothing and several
parameter sets from the tuning space."""
import numpy as np
import pytest

import reference as R
from hetcl.backend.buffers import empty, to_device
from hetcl.codegen.update import Axpby, SGDMulti, SGDStep, UpdateParams

TOL = 1e-4
PICKS = [UpdateParams(16, 1, 1), UpdateParams(32, 2, 4), UpdateParams(64, 4, 16)]


def rel_err(x, ref):
    return np.linalg.norm(x - ref) / max(np.linalg.norm(ref), 1e-30)


def param_sets(device):
    sets = [UpdateParams.defaults(device.features)] + PICKS
    space = UpdateParams.space(device.features)
    for p in sets:
        assert p in space and p.valid(device.features), p
    return sets


# (lr, momentum, weight_decay, nesterov)
CONFIGS = {"plain": (0.1, 0.0, 0.0, False), "momentum": (0.05, 0.9, 0.0, False),
           "nesterov": (0.05, 0.9, 0.0, True), "weight_decay": (0.1, 0.0, 0.01, False),
           "all": (0.02, 0.8, 0.05, True)}


@pytest.mark.parametrize("config", list(CONFIGS))
def test_sgd_steps(device, config):
    lr, momentum, wd, nesterov = CONFIGS[config]
    sets = param_sets(device)
    rng = np.random.default_rng(0)
    # The five configs between them run every parameter set; size 1 is all tail.
    for size, p in [(1003, sets[list(CONFIGS).index(config) % len(sets)]), (1, sets[0])]:
        op = SGDStep(device, size, nesterov=nesterov, params=p)
        p_ref = rng.standard_normal(size).astype(np.float32)
        v_ref = np.zeros(size, np.float32)
        p_d = to_device(device, p_ref)
        # momentum 0 never reads v: a NaN-poisoned buffer must not leak into p.
        v_d = empty(device, (size,)).fill(np.nan if momentum == 0 else 0.0)
        for step in range(4):
            g = rng.standard_normal(size).astype(np.float32)
            op(p_d, to_device(device, g), v_d, lr, momentum, wd).wait()
            p_ref, v_ref = R.sgd_step(p_ref.astype(np.float64), g, v_ref, lr, momentum, wd,
                                      nesterov)
            assert rel_err(p_d.get(), p_ref) < TOL, (step, size)
            assert rel_err(v_d.get(), v_ref) < TOL, (step, size)


@pytest.mark.parametrize("config", ["momentum", "all"])
def test_sgd_multi_equals_one_sgd_per_tensor(device, config):
    """One launch over tensors of several sizes (1, tails, several groups) gives bit for bit
    what one SGD launch per tensor gives, over steps, with each parameter set."""
    lr, momentum, wd, nesterov = CONFIGS[config]
    rng = np.random.default_rng(1)
    sizes = (1003, 1, 4096 + 37, 64)
    for params in param_sets(device):
        multi = SGDMulti(device, sizes, nesterov=nesterov, params=params)
        singles = [SGDStep(device, n, nesterov=nesterov, params=params) for n in sizes]
        start = [rng.standard_normal(n).astype(np.float32) for n in sizes]
        a = [(to_device(device, p), empty(device, (n,)).fill(0.0)) for p, n in zip(start, sizes)]
        b = [(to_device(device, p), empty(device, (n,)).fill(0.0)) for p, n in zip(start, sizes)]
        for step in range(3):
            grads = [to_device(device, rng.standard_normal(n).astype(np.float32)) for n in sizes]
            multi([(p, g, v) for (p, v), g in zip(a, grads)], lr, momentum, wd).wait()
            for op, (p, v), g in zip(singles, b, grads):
                op(p, g, v, lr, momentum, wd).wait()
        for (pa, va), (pb, vb), p0 in zip(a, b, start):
            assert np.array_equal(pa.get(), pb.get()) and np.array_equal(va.get(), vb.get())
            assert not np.array_equal(pa.get(), p0)
    with pytest.raises(ValueError, match="tensors"):
        SGDMulti(device, (4,) * (SGDMulti.MAX_TENSORS + 1))


def test_axpby(device):
    rng = np.random.default_rng(2)
    for i, p in enumerate(param_sets(device)):
        for size in (4096 + 37, 1) if i == 0 else (4096 + 37,):  # size 1: all tail, defaults
            op = Axpby(device, size, params=p)
            x = rng.standard_normal(size).astype(np.float32)
            x_d = to_device(device, x)
            # b == 0: y holds NaN and must not be read.
            y_d = empty(device, (size,)).fill(np.nan)
            op(x_d, y_d, 0.25, 0.0).wait()
            y = y_d.get()
            assert np.isfinite(y).all() and rel_err(y, 0.25 * x) < TOL, (p, size)
            # General case, accumulating a second shard into the first.
            op(x_d, y_d, -3.0, 2.0).wait()
            assert rel_err(y_d.get(), -3.0 * x + 2.0 * y) < TOL, (p, size)
            # In place, x is y: y = (a + b) * y.
            op(y_d, y_d, 0.5, 1.5).wait()
            assert rel_err(y_d.get(), 2.0 * (-3.0 * x + 2.0 * y)) < TOL, (p, size)


def test_bad_size(device):
    with pytest.raises(ValueError, match="size"):
        Axpby(device, 0)
