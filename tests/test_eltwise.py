"""Bias + activation, activation backward and bias gradient against tests/reference.py on every
device: every activation x layout, in place, without bias, awkward shapes (n, f, s multiples of
nothing), several parameter sets from each tuning space. Outputs are poisoned with NaN before
each run, so an element the kernel misses cannot pass."""
import numpy as np
import pytest

import reference as R
from hetcl.backend.buffers import empty, to_device
from hetcl.codegen.eltwise import (ACTIVATIONS, LAYOUTS, ActBwd, BiasAct, BiasGrad,
                                   BiasGradParams, EltwiseParams)

TOL = 1e-4
# (n, f, s): multiples of nothing, dense (s = 1), and s a multiple of the vector width.
SHAPES = [(7, 5, 143), (13, 10, 1), (3, 4, 16)]
FWD = {"none": lambda x: x, "relu": R.relu_fwd, "sigmoid": R.sigmoid_fwd}
BWD = {"none": lambda y, dy: dy, "relu": R.relu_bwd, "sigmoid": R.sigmoid_bwd}
# Non-default points of the spaces: scalar and vector paths, several vectors per work-item,
# vectors that do and do not divide s (gathered lanes, bounds-checked tails).
ELTWISE_PICKS = [EltwiseParams(16, 2, 1), EltwiseParams(32, 4, 2), EltwiseParams(128, 1, 8)]
# No tree (WGS 1), several features per group with a partial last group, partial vector units,
# interleaved and blocked.
BIASGRAD_PICKS = [BiasGradParams(1, 4, 1, 0), BiasGradParams(64, 2, 4, 0),
                  BiasGradParams(4, 1, 16, 1)]


def rel_err(x, ref):
    return np.linalg.norm(x - ref) / max(np.linalg.norm(ref), 1e-30)


def check(out, ref, what):
    assert np.isfinite(out).all(), f"{what}: non-finite output (missed or poisoned elements)"
    assert rel_err(out, ref) < TOL, f"{what}: relative error {rel_err(out, ref):.3g}"


def to_layout(x, layout):
    """[n][f][s] -> the given layout ("fns" = [f][n][s])."""
    return np.ascontiguousarray(x if layout == "nfs" else x.transpose(1, 0, 2))


def param_sets(cls, device, picks):
    space = cls.space(device.features)
    sets = [cls.defaults(device.features)] + picks
    for p in sets:
        assert p in space and p.valid(device.features), p
    return sets


def activations_input(rng, shape):
    """Pre-activations with exact zeros (relu's kink) and moderately large values."""
    z = rng.standard_normal(shape).astype(np.float32) * 4
    z.flat[::7] = 0.0
    return z


def run_bias_act(device, z, b, act, layout, params=None, bias=True):
    n, f, s = z.shape
    op = BiasAct(device, n, f, s, act, layout, bias=bias, params=params)
    zd = to_device(device, to_layout(z, layout))
    bd = to_device(device, b) if bias else None
    y = empty(device, (n, f, s)).fill(np.nan)
    op(zd, bd, y).wait()
    return op, zd, bd, y.get()


def combo_shape(act, layout):
    """Each (activation, layout) pair runs on one shape; every layout meets every shape."""
    i = ACTIVATIONS.index(act) * len(LAYOUTS) + LAYOUTS.index(layout)
    return SHAPES[i % len(SHAPES)]


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_bias_act(device, act, layout):
    rng = np.random.default_rng(0)
    n, f, s = combo_shape(act, layout)
    z = activations_input(rng, (n, f, s))
    b = rng.standard_normal(f).astype(np.float32)
    ref = FWD[act](z.astype(np.float64) + b[None, :, None])
    op, zd, bd, out = run_bias_act(device, z, b, act, layout)
    check(out, ref, (n, f, s))
    if layout == "nfs":  # in place: y is z
        op(zd, bd, zd).wait()
        check(zd.get(), ref, ("in place", n, f, s))
    else:
        with pytest.raises(ValueError, match="in place"):
            op(zd, bd, zd)


def test_bias_act_without_bias(device):
    rng = np.random.default_rng(1)
    for act, layout, shape in [("relu", "nfs", (1, 3, 1)), ("sigmoid", "fns", (5, 3, 7))]:
        z = activations_input(rng, shape)
        _, _, _, out = run_bias_act(device, z, None, act, layout, bias=False)
        check(out, FWD[act](z.astype(np.float64)), act)


def test_sigmoid_is_stable_for_huge_inputs(device):
    z = np.array([1e4, -1e4, 100.0, -100.0, 88.0, -88.0, 20.0, -20.0, 0.0], np.float32)
    z = z.reshape(1, 9, 1)
    _, _, _, out = run_bias_act(device, z, np.zeros(9, np.float32), "sigmoid", "nfs")
    ref = R.sigmoid_fwd(z.astype(np.float64))
    assert np.isfinite(out).all()
    assert np.abs(out - ref).max() < 1e-7 and out[0, 0, 0] == 1.0 and out[0, 1, 0] == 0.0


def test_bias_act_param_sets(device):
    rng = np.random.default_rng(2)
    # The defaults ran every activation and layout above; each pick runs one pair.
    for i, p in enumerate(param_sets(EltwiseParams, device, ELTWISE_PICKS)[1:]):
        act, layout = ACTIVATIONS[i % len(ACTIVATIONS)], LAYOUTS[(i + 1) % len(LAYOUTS)]
        n, f, s = 7, 5, 143
        z = activations_input(rng, (n, f, s))
        b = rng.standard_normal(f).astype(np.float32)
        _, _, _, out = run_bias_act(device, z, b, act, layout, params=p)
        check(out, FWD[act](z.astype(np.float64) + b[None, :, None]), (p, layout, act))


def run_act_bwd(device, y, dy, act, layout, params=None):
    n, f, s = y.shape
    op = ActBwd(device, n, f, s, act, layout, params=params)
    yd, dyd = to_device(device, y), to_device(device, dy)
    dz = empty(device, (n * f * s,)).fill(np.nan)
    op(yd, dyd, dz).wait()
    return op, yd, dyd, dz.get()


def act_bwd_case(rng, shape, act):
    y = FWD[act](activations_input(rng, shape)).astype(np.float32)  # the activation's output
    dy = rng.standard_normal(shape).astype(np.float32)
    return y, dy, BWD[act](y.astype(np.float64), dy.astype(np.float64))


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("act", ACTIVATIONS)
def test_act_bwd(device, act, layout):
    rng = np.random.default_rng(3)
    shape = combo_shape(act, LAYOUTS[1 - LAYOUTS.index(layout)])  # not bias_act's pairing
    y, dy, ref = act_bwd_case(rng, shape, act)
    op, yd, dyd, out = run_act_bwd(device, y, dy, act, layout)
    check(out, to_layout(ref, layout).ravel(), shape)
    if layout == "nfs":  # in place: dz is dy
        op(yd, dyd, dyd).wait()
        check(dyd.get(), ref, ("in place", shape))
    else:
        with pytest.raises(ValueError, match="in place"):
            op(yd, dyd, dyd)


def test_act_bwd_param_sets(device):
    rng = np.random.default_rng(4)
    for i, p in enumerate(param_sets(EltwiseParams, device, ELTWISE_PICKS)[1:]):
        act, layout = ACTIVATIONS[(i + 1) % len(ACTIVATIONS)], LAYOUTS[i % len(LAYOUTS)]
        y, dy, ref = act_bwd_case(rng, (7, 5, 143), act)
        _, _, _, out = run_act_bwd(device, y, dy, act, layout, params=p)
        check(out, to_layout(ref, layout).ravel(), (p, layout, act))


def bias_grad_case(rng, shape):
    """Feature 0 is the constant 0.1f, the classic worst case of a running float32 sum (its
    rounding errors all go one way): one plain sum over n*s = 262144 of them is ~1e-3 off, the
    kernel's compensated sum ~1e-7. The others have a large mean, so sums dwarf each term."""
    dz = (1.0 + 0.25 * rng.standard_normal(shape)).astype(np.float32)
    dz[:, 0, :] = np.float32(0.1)
    return dz


def run_bias_grad(device, dz, layout, accumulate, db0=None, params=None):
    n, f, s = dz.shape
    op = BiasGrad(device, n, f, s, layout, accumulate=accumulate, params=params)
    dzd = to_device(device, to_layout(dz, layout))
    db = to_device(device, db0) if accumulate else empty(device, (f,)).fill(np.nan)
    op(dzd, db).wait()
    return op, dzd, db


@pytest.mark.parametrize("accumulate", [False, True])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_bias_grad(device, layout, accumulate):
    rng = np.random.default_rng(5)
    small = SHAPES[(2 * LAYOUTS.index(layout) + accumulate) % len(SHAPES)]
    for n, f, s in [small, (256, 3, 1024)]:
        dz = bias_grad_case(rng, (n, f, s))
        db0 = rng.standard_normal(f).astype(np.float32) * 10
        ref = dz.astype(np.float64).sum(axis=(0, 2)) + (db0 if accumulate else 0)
        op, dzd, db = run_bias_grad(device, dz, layout, accumulate, db0)
        first = db.get()
        check(first, ref, (n, f, s))
        if not accumulate:  # deterministic: a second run gives the same bits
            op(dzd, db.fill(np.nan)).wait()
            assert np.array_equal(db.get(), first)


def test_bias_grad_param_sets(device):
    rng = np.random.default_rng(6)
    for i, p in enumerate(param_sets(BiasGradParams, device, BIASGRAD_PICKS)[1:]):
        for layout, shape in zip(LAYOUTS, [(7, 5, 143), (256, 3, 1024)][::1 - 2 * (i % 2)]):
            accumulate = layout == "fns"
            dz = bias_grad_case(rng, shape)
            db0 = rng.standard_normal(shape[1]).astype(np.float32)
            _, _, db = run_bias_grad(device, dz, layout, accumulate, db0, params=p)
            ref = dz.astype(np.float64).sum(axis=(0, 2)) + (db0 if accumulate else 0)
            check(db.get(), ref, (p, layout, shape, accumulate))


def test_bias_grad_default_fits_the_layout():
    p = BiasGradParams(16, 1, 16, 1)
    assert p.fit("nfs", 784).VW == 16 and p.fit("fns", 143).VW == 16
    assert p.fit("nfs", 100).VW == 4 and p.fit("nfs", 143).VW == 1 and p.fit("nfs", 1).VW == 1


def test_invalid_arguments_are_rejected(device):
    with pytest.raises(ValueError, match="act"):
        BiasAct(device, 2, 3, 4, "tanh")
    with pytest.raises(ValueError, match="layout"):
        BiasGrad(device, 2, 3, 4, layout="nchw")
    with pytest.raises(ValueError, match=">= 1"):
        ActBwd(device, 0, 3, 4, "relu")
    assert BiasGradParams(WGS=48).check() and EltwiseParams(VW=3).check()
