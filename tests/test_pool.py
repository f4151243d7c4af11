"""Max pooling forward (values and argmax) and backward against tests/reference.py on every
device: non-overlapping, overlapping (stride < size), stride > size, rectangular and odd shapes,
and ties. Outputs are poisoned (NaN / -1) before each run, so a missed element cannot pass."""
import numpy as np
import pytest

import reference
from hetcl.backend.buffers import empty, to_device
from hetcl.codegen.pool import MaxPoolBwd, MaxPoolFwd, PoolParams

TOL = 1e-4

# (input NCHW, window, stride)
CASES = [
    ((2, 3, 8, 8), (2, 2), (2, 2)),
    ((3, 5, 13, 11), (3, 3), (2, 2)),     # overlapping, odd sizes, ragged edge
    ((2, 3, 7, 9), (3, 3), (1, 1)),       # heavily overlapping
    ((3, 5, 5, 7), (2, 3), (1, 2)),       # rectangular window and stride
    ((2, 3, 10, 9), (2, 2), (3, 3)),      # stride > size: pixels no window covers
    ((1, 1, 1, 1), (1, 1), (1, 1)),
    ((7, 1, 13, 11), (13, 11), (1, 1)),   # one window over the whole image
    ((2, 2, 12, 12), (6, 6), (1, 1)),     # big overlap: the looped (not unrolled) variants
]


def rel_err(x, ref):
    return np.linalg.norm(x - ref) / max(np.linalg.norm(ref), 1e-30)


def run_pool(device, x, size, stride, dy=None, params=None):
    """-> y, argmax, dx (dx from the device's own argmax and ``dy``)."""
    fwd = MaxPoolFwd(device, x.shape, size, stride, params=params)
    bwd = MaxPoolBwd(device, x.shape, size, stride, params=params)
    assert bwd.out_shape == fwd.out_shape
    y = empty(device, fwd.out_shape).fill(np.nan)
    arg = empty(device, fwd.out_shape, np.int32).fill(-1)
    fwd(to_device(device, x), y, arg)
    dx = empty(device, x.shape).fill(np.nan)
    if dy is None:
        dy = np.ones(fwd.out_shape, np.float32)
    bwd(to_device(device, dy), arg, dx)
    return y.get(), arg.get(), dx.get()


def check_case(device, case, rng, params=None, ties=False):
    shape, size, stride = case
    # Few distinct values make many ties inside windows: the first maximum must win.
    x = (rng.integers(0, 3, shape) if ties else rng.standard_normal(shape)).astype(np.float32)
    y_ref, arg_ref = reference.maxpool_fwd(x, size, stride)
    assert y_ref.shape[2:] == ((shape[2] - size[0]) // stride[0] + 1,
                               (shape[3] - size[1]) // stride[1] + 1)
    dy = rng.standard_normal(y_ref.shape).astype(np.float32)
    y, arg, dx = run_pool(device, x, size, stride, dy, params)
    where = (case, str(params), ties)
    np.testing.assert_array_equal(y, y_ref, err_msg=str(where))
    np.testing.assert_array_equal(arg, arg_ref, err_msg=str(where))
    dx_ref = reference.maxpool_bwd(shape, arg_ref, dy.astype(np.float64))
    assert np.isfinite(dx).all(), where
    assert rel_err(dx, dx_ref) < TOL, where


@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_maxpool_default_params(device, case):
    rng = np.random.default_rng(CASES.index(case))
    check_case(device, case, rng)
    check_case(device, case, rng, ties=True)


def test_maxpool_params_from_space(device):
    rng = np.random.default_rng(10)
    space = PoolParams.valid_space(device.features)
    picks = [PoolParams(WG=16, WPT=1), PoolParams(WG=32, WPT=8), PoolParams(WG=128, WPT=2),
             PoolParams(WG=1, WPT=4, PLANES=1), PoolParams(WG=16, WPT=2, PLANES=1)]
    assert PoolParams.defaults(device.features) in space and all(p in space for p in picks)
    for p in picks:
        for case in (CASES[1], CASES[4]):
            check_case(device, case, rng, params=p, ties=True)


FORMS = {"elements": PoolParams(WG=64, WPT=1, PLANES=0),
         "planes": PoolParams(WG=4, WPT=2, PLANES=1)}


@pytest.mark.parametrize("form", sorted(FORMS))
@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_maxpool_each_form(device, case, form):
    """Both work decompositions on every case (the defaults pick one per device)."""
    rng = np.random.default_rng(CASES.index(case))
    check_case(device, case, rng, params=FORMS[form])
    check_case(device, case, rng, params=FORMS[form], ties=True)


def test_maxpool_forms_agree_bitwise(device):
    """The plane form's scatter sums each pixel's windows in the gather's order: same bits."""
    rng = np.random.default_rng(11)
    shape, size, stride = (3, 5, 13, 11), (3, 3), (1, 1)
    x = rng.integers(0, 4, shape).astype(np.float32)
    dy = rng.standard_normal(((3, 5, 11, 9))).astype(np.float32)
    outs = [run_pool(device, x, size, stride, dy, p) for p in FORMS.values()]
    for a, b in zip(outs[0], outs[1]):
        np.testing.assert_array_equal(a, b)


def test_all_equal_input_routes_to_first_element(device):
    """Every window ties: argmax is the window's top-left pixel, and dx gathers there only."""
    shape, size, stride = (2, 3, 7, 8), (3, 3), (2, 2)
    y, arg, dx = run_pool(device, np.full(shape, 0.5, np.float32), size, stride)
    oh, ow = y.shape[2:]
    top_left = (np.arange(oh)[:, None] * stride[0] * shape[3] + np.arange(ow)[None, :] * stride[1])
    assert (y == 0.5).all()
    assert (arg == top_left).all()
    expect = np.zeros((shape[2] * shape[3],), np.float32)
    expect[top_left.ravel()] = 1.0   # dy = 1 per window; top-left corners are distinct here
    for plane in dx.reshape(-1, expect.size):
        np.testing.assert_array_equal(plane, expect)


def test_bad_shapes_are_rejected(device):
    with pytest.raises(ValueError, match="bad pooling shape"):
        MaxPoolFwd(device, (1, 1, 2, 2), (3, 3), (1, 1))
    assert "positive" in PoolParams(WG=16, WPT=0).check()
    assert "PLANES" in PoolParams(PLANES=2).check()
