"""im2col / col2im against the numpy convolution reference, through the GEMMs a Conv2D layer runs.

forward : Y[F, cols] = W[F, C*KH*KW] @ im2col(x)          == reference.conv2d_fwd (bias on host)
backward: dW = dY' @ col^T,  dx = col2im(W^T @ dY')        == reference.conv2d_bwd's dw, dx
(dY' is dy as [F, images*OH*OW]). Every output buffer is poisoned with NaN first, so an element
the kernels miss cannot pass; chunks at a nonzero image offset must leave the other images alone.
"""
import numpy as np
import pytest

import reference
from hetcl.backend.buffers import empty, to_device
from hetcl.codegen.conv import Col2Im, Col2ImParams, Im2Col, Im2ColParams
from hetcl.codegen.gemm import Gemm
from hetcl.codegen.gemm import GemmParams

TOL = 1e-4

# (batch N, C, H, W, F, (KH, KW), stride, pad, first image of the chunk, images in the chunk)
CASES = [
    (1, 3, 13, 11, 5, (3, 3), (1, 1), (0, 0), 0, 1),
    (7, 5, 13, 11, 3, (5, 5), (1, 1), (2, 2), 0, 7),
    (7, 3, 13, 11, 5, (3, 2), (2, 2), (1, 1), 0, 7),
    (7, 5, 13, 11, 3, (3, 3), (2, 1), (1, 2), 3, 4),   # chunk at image offset 3
    (7, 3, 13, 11, 5, (5, 5), (2, 2), (0, 0), 0, 7),
    (2, 3, 1, 1, 5, (3, 3), (1, 1), (1, 1), 1, 1),     # 1x1 image, all taps but one are padding
    (1, 5, 13, 11, 3, (3, 2), (1, 2), (2, 1), 0, 1),
]
# Non-default points of the spaces (CPT=4 with C=3/5 exercises the ragged channel group), run on
# a case with overlapping windows both ways (3x2 kernel, stride 2x1), padding and a chunk offset.
# (WG, WPT, CPT[, PLANES]): the last three are the per-plane form.
EXTRA_PARAMS = [(16, 1, 1), (32, 8, 4), (256, 2, 2), (1, 1, 1, 1), (4, 2, 1, 1), (16, 8, 1, 1)]
# Each form on every case, whichever the device's defaults pick.
FORMS = {"columns": (64, 4, 2, 0), "planes": (1, 1, 1, 1)}
PARAMS_CASE = (7, 5, 13, 11, 3, (3, 2), (2, 1), (1, 2), 2, 4)


def cheap_gemm_params(features):
    """The GEMMs here only carry im2col/col2im to the reference (tests/test_gemm.py tests GEMM
    itself): the valid point with the fewest accumulators per work-item compiles fastest."""
    return min(GemmParams.valid_space(features),
               key=lambda p: ((p.MWG // p.MDIMC) * (p.NWG // p.NDIMC),
                              abs(p.work_group_size() - 64), str(p)))


def rel_err(x, ref):
    return np.linalg.norm(x - ref) / max(np.linalg.norm(ref), 1e-30)


def conv_through_gemm(device, x, w, dy, stride, pad, start, images, p_im2col=None,
                      p_col2im=None):
    """-> y, dx, dw of the chunk x[start:start+images] via im2col, three GEMMs and col2im."""
    n, c, h, wd = x.shape
    f, _, kh, kw = w.shape
    fwd = Im2Col(device, (c, h, wd), (kh, kw), stride, pad, images, params=p_im2col)
    bwd = Col2Im(device, (c, h, wd), (kh, kw), stride, pad, images, params=p_col2im)
    assert (fwd.rows, fwd.cols) == (c * kh * kw, images * fwd.out_hw[0] * fwd.out_hw[1])
    assert bwd.out_hw == fwd.out_hw and (bwd.rows, bwd.cols) == (fwd.rows, fwd.cols)
    oh, ow = fwd.out_hw
    gp = cheap_gemm_params(device.features)
    chw = c * h * wd
    rows, cols = fwd.rows, fwd.cols

    x_buf, w_buf = to_device(device, x), to_device(device, w.reshape(f, rows))
    col = empty(device, (rows, cols)).fill(np.nan)
    fwd(x_buf, col, x_off=start * chw)
    y = empty(device, (f, cols)).fill(np.nan)
    Gemm(device, f, cols, rows, params=gp)(w_buf, col, y)
    y = y.get().reshape(f, images, oh, ow).transpose(1, 0, 2, 3)

    dz = to_device(device, dy[start:start + images].transpose(1, 0, 2, 3).reshape(f, cols))
    dw = empty(device, (f, rows)).fill(np.nan)
    Gemm(device, f, rows, cols, trans_b=True, params=gp)(dz, col, dw)
    dcol = empty(device, (rows, cols)).fill(np.nan)
    Gemm(device, rows, cols, f, trans_a=True, params=gp)(w_buf, dz, dcol)
    dx = empty(device, x.shape).fill(np.nan)
    bwd(dcol, dx, dx_off=start * chw)
    dx = dx.get()
    outside = np.concatenate([dx[:start], dx[start + images:]])
    assert np.isnan(outside).all(), "col2im wrote outside its chunk"
    return y, dx[start:start + images], dw.get().reshape(w.shape)


def check_case(device, case, rng, p_im2col=None, p_col2im=None):
    n, c, h, wd, f, (kh, kw), stride, pad, start, images = case
    x = rng.standard_normal((n, c, h, wd)).astype(np.float32)
    w = rng.standard_normal((f, c, kh, kw)).astype(np.float32)
    b = rng.standard_normal(f).astype(np.float32)
    oh = reference.conv_out_size(h, kh, stride[0], pad[0])
    ow = reference.conv_out_size(wd, kw, stride[1], pad[1])
    dy = rng.standard_normal((n, f, oh, ow)).astype(np.float32)

    y, dx, dw = conv_through_gemm(device, x, w, dy, stride, pad, start, images,
                                  p_im2col, p_col2im)
    chunk = slice(start, start + images)
    x64, w64, dy64 = (a.astype(np.float64) for a in (x[chunk], w, dy[chunk]))
    y_ref = reference.conv2d_fwd(x64, w64, b.astype(np.float64), stride, pad)
    dx_ref, dw_ref, _ = reference.conv2d_bwd(x64, w64, dy64, stride, pad)
    where = (case, str(p_im2col), str(p_col2im))
    assert np.isfinite(y).all() and np.isfinite(dx).all() and np.isfinite(dw).all(), where
    assert rel_err(y + b.reshape(1, f, 1, 1), y_ref) < TOL, where
    assert rel_err(dx, dx_ref) < TOL, where
    assert rel_err(dw, dw_ref) < TOL, where


@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_conv_via_gemm_default_params(device, case):
    check_case(device, case, np.random.default_rng(CASES.index(case)))


@pytest.mark.parametrize("form", sorted(FORMS))
@pytest.mark.parametrize("case", CASES, ids=[f"case{i}" for i in range(len(CASES))])
def test_conv_via_gemm_each_form(device, case, form):
    t = FORMS[form]
    check_case(device, case, np.random.default_rng(CASES.index(case)), Im2ColParams(*t),
               Col2ImParams(*t))


def test_conv_via_gemm_params_from_space(device):
    rng = np.random.default_rng(7)
    for cls in (Im2ColParams, Col2ImParams):
        space = cls.valid_space(device.features)
        assert cls.defaults(device.features) in space
        assert all(cls(*t) in space for t in EXTRA_PARAMS)
    for t in EXTRA_PARAMS:
        check_case(device, PARAMS_CASE, rng, Im2ColParams(*t), Col2ImParams(*t))


def test_im2col_layout_and_padding(device):
    """The exact layout: row ch*KH*KW + i*KW + j, column n*OH*OW + oy*OW + ox, zero padding."""
    rng = np.random.default_rng(3)
    n, c, h, w, (kh, kw), (sh, sw), (ph, pw) = 2, 3, 5, 4, (3, 2), (2, 1), (1, 2)
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    for params in [None] + [Im2ColParams(*t) for t in FORMS.values()]:
        op = Im2Col(device, (c, h, w), (kh, kw), (sh, sw), (ph, pw), n, params=params)
        col = empty(device, (op.rows, op.cols)).fill(np.nan)
        op(to_device(device, x), col)
        oh, ow = op.out_hw
        xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        expect = np.empty((c, kh, kw, n, oh, ow), np.float32)
        for i in range(kh):
            for j in range(kw):
                expect[:, i, j] = xp[:, :, i:i + sh * (oh - 1) + 1:sh,
                                     j:j + sw * (ow - 1) + 1:sw].transpose(1, 0, 2, 3)
        np.testing.assert_array_equal(col.get(), expect.reshape(op.rows, op.cols), str(params))


def test_col2im_is_deterministic(device):
    """A gather with a fixed summation order: two runs agree bit for bit (stride < kernel)."""
    rng = np.random.default_rng(4)
    for t in FORMS.values():
        _check_col2im_deterministic(device, rng, Col2ImParams(*t))


def _check_col2im_deterministic(device, rng, params):
    op = Col2Im(device, (5, 13, 11), (5, 5), (1, 1), (2, 2), 7, params=params)
    dcol = to_device(device, rng.standard_normal((op.rows, op.cols)).astype(np.float32))
    outs = []
    for _ in range(2):
        dx = empty(device, (7, 5, 13, 11)).fill(np.nan)
        op(dcol, dx)
        outs.append(dx.get())
    np.testing.assert_array_equal(outs[0], outs[1])


def test_bad_shapes_and_params_are_rejected(device):
    with pytest.raises(ValueError, match="does not fit"):
        Im2Col(device, (3, 4, 4), (5, 5), (1, 1), (0, 0), 1)
    assert "positive" in Im2ColParams(WG=0).check()
    assert "CPT=1" in Im2ColParams(CPT=2, PLANES=1).check()
    assert "PLANES" in Col2ImParams(PLANES=2).check()
    too_big = Col2ImParams(WG=device.features["max_work_group_size"] * 2)
    with pytest.raises(ValueError, match="work-group"):
        Col2Im(device, (3, 4, 4), (3, 3), (1, 1), (1, 1), 1, params=too_big)
