"""Every layer's bound op, forward and all backward outputs, against tests/reference.py on every
device, for shapes that are multiples of no tile (batch 1 and 7, 3 and 5 channels, 13x11 images,
stride 2, padding 1 and 2). Outputs are poisoned with NaN before each run."""
import numpy as np
import pytest

import reference as ref
from hetcl.backend.buffers import empty, to_device
from hetcl.codegen.conv_dx import ConvDxParams, by_conv_fits
from hetcl.model.layers import Add, Conv2D, Dense, MaxPool2D, ReLU, Sigmoid

TOL = 1e-4
ACTS = {"none": (lambda z: z, lambda y, dy: dy), "relu": (ref.relu_fwd, ref.relu_bwd),
        "sigmoid": (ref.sigmoid_fwd, ref.sigmoid_bwd)}


def rel(a, b):
    return np.linalg.norm(np.asarray(a, np.float64) - b) / max(np.linalg.norm(b), 1e-30)


def poisoned(device, shape, dtype=np.float32):
    return empty(device, shape, dtype).fill(np.nan)


def run_layer(device, layer, xs, params, act="none", seed=0):
    """Bind on the device, run forward then backward with a random dy. -> y, dy, dxs, grads"""
    n = xs[0].shape[0]
    layer.build(*(x.shape[1:] for x in xs))
    op = layer.bind(device, n, act=act)
    dev_x = [to_device(device, x.astype(np.float32)) for x in xs]
    dev_p = {k: to_device(device, v.astype(np.float32)) for k, v in params.items()}
    y = poisoned(device, (n,) + layer.output_shape)
    op.forward(dev_x, y, dev_p)
    dy = np.random.default_rng(seed).standard_normal((n,) + layer.output_shape).astype(np.float32)
    dxs = [poisoned(device, x.shape) for x in xs]
    grads = {k: poisoned(device, v.shape) for k, v in params.items()}
    op.backward(dev_x, y, to_device(device, dy), dxs, dev_p, grads)
    return y.get(), dy, [d.get() for d in dxs], {k: v.get() for k, v in grads.items()}


@pytest.mark.parametrize("n,fin,fout", [(1, 5, 3), (7, 13, 5), (33, 100, 10), (2, 1030, 5)])
@pytest.mark.parametrize("act", ["none", "relu", "sigmoid"])
def test_dense(device, n, fin, fout, act):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((n, fin))
    w, b = rng.standard_normal((fout, fin)), rng.standard_normal(fout)
    y, dy, (dx,), g = run_layer(device, Dense(fin, fout), [x], {"weight": w, "bias": b}, act)
    fwd, bwd = ACTS[act]
    y_ref = fwd(ref.dense_fwd(x, w, b))
    assert rel(y, y_ref) < TOL
    dx_ref, dw_ref, db_ref = ref.dense_bwd(x, w, bwd(y_ref, dy))
    assert rel(dx, dx_ref) < TOL and rel(g["weight"], dw_ref) < TOL and rel(g["bias"], db_ref) < TOL


CONVS = [  # n, c, h, w, f, kernel, stride, pad
    (1, 3, 13, 11, 5, (3, 3), (1, 1), (1, 1)),
    (7, 5, 13, 11, 3, (5, 5), (2, 2), (2, 2)),
    (7, 3, 13, 11, 5, (3, 2), (2, 1), (0, 1)),
    (2, 1, 28, 28, 6, (5, 5), (1, 1), (2, 2)),
    (3, 6, 14, 14, 16, (5, 5), (1, 1), (0, 0)),
    (1, 2, 1, 1, 3, (1, 1), (1, 1), (0, 0)),
    # stride 1, F <= C: dx also as a convolution of dz with flipped weights (codegen/conv_dx.py)
    (3, 5, 13, 11, 4, (3, 3), (1, 1), (1, 1)),
    (2, 6, 9, 10, 6, (3, 2), (1, 1), (1, 1)),
    (2, 8, 7, 7, 3, (5, 5), (1, 1), (2, 2)),
    (2, 8, 9, 9, 2, (3, 3), (1, 1), (0, 0)),
]


def _out_hw(h, w, k, s, p):
    return ((h + 2 * p[0] - k[0]) // s[0] + 1, (w + 2 * p[1] - k[1]) // s[1] + 1)


# Each shape with dx by col2im (BY_CONV=0) and, where it can run, by a convolution of dz.
CONV_CASES = [shape + (by_conv,) for shape in CONVS for by_conv in (0, 1)
              if not by_conv or by_conv_fits(shape[1:4], shape[4], shape[5], shape[6], shape[7],
                                             _out_hw(*shape[2:4], *shape[5:8]))]


def force_conv_dx(monkeypatch, by_conv):
    """The conv_dx choice for every layer bound after this (the DB has no entry for these
    shapes, so the default decides)."""
    monkeypatch.setattr(ConvDxParams, "defaults", classmethod(lambda cls, features:
                                                              cls(by_conv)))


@pytest.mark.parametrize("n,c,h,w,f,k,s,p,by_conv", CONV_CASES)
@pytest.mark.parametrize("act", ["none", "relu"])
def test_conv2d(device, monkeypatch, n, c, h, w, f, k, s, p, by_conv, act):
    force_conv_dx(monkeypatch, by_conv)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((n, c, h, w))
    wt, b = rng.standard_normal((f, c) + k), rng.standard_normal(f)
    layer = Conv2D(c, f, k, stride=s, padding=p)
    y, dy, (dx,), g = run_layer(device, layer, [x], {"weight": wt, "bias": b}, act)
    fwd, bwd = ACTS[act]
    y_ref = fwd(ref.conv2d_fwd(x, wt, b, s, p))
    assert rel(y, y_ref) < TOL
    dx_ref, dw_ref, db_ref = ref.conv2d_bwd(x, wt, bwd(y_ref, dy), s, p)
    assert rel(dx, dx_ref) < TOL and rel(g["weight"], dw_ref) < TOL and rel(g["bias"], db_ref) < TOL


@pytest.mark.parametrize("c,f,pad,by_conv", [(3, 4, 0, 0), (4, 3, 1, 0), (4, 3, 1, 1)])
def test_conv2d_in_chunks(device, monkeypatch, c, f, pad, by_conv):
    """A column budget smaller than the batch forces several chunks (and a short last one),
    with dx by col2im and (F <= C, stride 1) by a convolution of dz."""
    import hetcl.engine.ops as ops
    budget = 4 * 9 * c * 99 * 2  # two images' columns
    monkeypatch.setattr(ops, "column_budget", lambda device: budget)
    force_conv_dx(monkeypatch, by_conv)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, c, 13 - 2 * pad, 11 - 2 * pad))  # 11x9 outputs
    wt, b = rng.standard_normal((f, c, 3, 3)), rng.standard_normal(f)
    layer = Conv2D(c, f, 3, padding=pad)
    layer.build(x.shape[1:])
    op = layer.bind(device, 5)
    assert len(op.chunks) == 3 and op.dx.params.BY_CONV == by_conv
    y, dy, (dx,), g = run_layer(device, layer, [x], {"weight": wt, "bias": b})
    assert rel(y, ref.conv2d_fwd(x, wt, b, (1, 1), (pad, pad))) < TOL
    dx_ref, dw_ref, db_ref = ref.conv2d_bwd(x, wt, dy, (1, 1), (pad, pad))
    assert rel(dx, dx_ref) < TOL and rel(g["weight"], dw_ref) < TOL and rel(g["bias"], db_ref) < TOL


def test_column_budget_follows_the_device():
    """CPUs: a quarter of the reported cache (the default where none is); GPUs: 1/32 of the
    memory, at least 512 MiB; never over half the largest allocation."""
    import types
    from hetcl.engine.ops import column_budget

    def dev(simt, mem, cache, max_alloc=1 << 40):
        return types.SimpleNamespace(features={"simt": simt}, profile={
            "global_mem_bytes": mem, "global_mem_cache_bytes": cache, "max_alloc_bytes": max_alloc})
    assert column_budget(dev(False, 64 << 30, 32 << 20)) == 8 << 20
    assert column_budget(dev(False, 64 << 30, 0)) == 8 << 20
    assert column_budget(dev(False, 64 << 30, 32 << 20, max_alloc=4 << 20)) == 2 << 20
    assert column_budget(dev(True, 80 << 30, 50 << 20)) == 2560 << 20
    assert column_budget(dev(True, 4 << 30, 4 << 20)) == 512 << 20


@pytest.mark.parametrize("n,c,h,w,size,stride", [(1, 3, 13, 11, (2, 2), (2, 2)),
                                                 (7, 5, 13, 11, (3, 3), (2, 2)),
                                                 (2, 6, 28, 28, (2, 2), None)])
def test_maxpool(device, n, c, h, w, size, stride):
    x = np.random.default_rng(4).standard_normal((n, c, h, w))
    y, dy, (dx,), _ = run_layer(device, MaxPool2D(size, stride), [x], {})
    y_ref, arg = ref.maxpool_fwd(x, size, stride or size)
    assert rel(y, y_ref) < TOL
    assert rel(dx, ref.maxpool_bwd(x.shape, arg, dy)) < TOL


@pytest.mark.parametrize("layer,act", [(ReLU(), "relu"), (Sigmoid(), "sigmoid")])
def test_activations(device, layer, act):
    x = np.random.default_rng(5).standard_normal((7, 3, 5, 4)) * 3
    y, dy, (dx,), _ = run_layer(device, layer, [x], {})
    fwd, bwd = ACTS[act]
    assert rel(y, fwd(x)) < TOL and rel(dx, bwd(fwd(x), dy)) < TOL


def test_add(device):
    rng = np.random.default_rng(6)
    a, b = rng.standard_normal((7, 13)), rng.standard_normal((7, 13))
    y, dy, (da, db), _ = run_layer(device, Add(), [a, b], {})
    assert rel(y, a + b) < TOL and rel(da, dy) < TOL and rel(db, dy) < TOL
