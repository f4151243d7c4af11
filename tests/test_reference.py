"""The numpy reference is itself checked: each backward against central finite differences of
its forward, in float64, on small odd shapes."""
import numpy as np
import pytest

import reference as ref

RNG = np.random.default_rng(0)


def numeric_grad(f, x, eps=1e-6):
    g = np.zeros_like(x)
    it = np.nditer(x, flags=["multi_index"])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + eps
        hi = f()
        x[i] = old - eps
        lo = f()
        x[i] = old
        g[i] = (hi - lo) / (2 * eps)
    return g


def close(a, b):
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12) < 1e-6


def test_dense():
    x, w, b = RNG.standard_normal((3, 5)), RNG.standard_normal((4, 5)), RNG.standard_normal(4)
    r = RNG.standard_normal((3, 4))
    loss = lambda: (ref.dense_fwd(x, w, b) * r).sum()
    dx, dw, db = ref.dense_bwd(x, w, r)
    assert close(dx, numeric_grad(loss, x)) and close(dw, numeric_grad(loss, w))
    assert close(db, numeric_grad(loss, b))


@pytest.mark.parametrize("stride,pad,k", [((1, 1), (0, 0), (3, 3)), ((2, 2), (1, 1), (3, 3)),
                                          ((2, 1), (2, 1), (3, 2)), ((1, 1), (2, 2), (5, 5))])
def test_conv2d(stride, pad, k):
    x = RNG.standard_normal((2, 3, 7, 6))
    w, b = RNG.standard_normal((4, 3) + k), RNG.standard_normal(4)
    y = ref.conv2d_fwd(x, w, b, stride, pad)
    assert y.shape[2:] == (ref.conv_out_size(7, k[0], stride[0], pad[0]),
                           ref.conv_out_size(6, k[1], stride[1], pad[1]))
    r = RNG.standard_normal(y.shape)
    loss = lambda: (ref.conv2d_fwd(x, w, b, stride, pad) * r).sum()
    dx, dw, db = ref.conv2d_bwd(x, w, r, stride, pad)
    assert close(dx, numeric_grad(loss, x)) and close(dw, numeric_grad(loss, w))
    assert close(db, numeric_grad(loss, b))


def test_conv2d_is_a_correlation():
    """One hand-computed value, so the reference is anchored to the definition too."""
    x = np.arange(16.0).reshape(1, 1, 4, 4)
    w = np.array([[[[1.0, 0.0], [0.0, -1.0]]]])
    y = ref.conv2d_fwd(x, w, np.array([0.5]))
    assert y[0, 0, 0, 0] == 0 * 1 - 5 * 1 + 0.5 and y.shape == (1, 1, 3, 3)


@pytest.mark.parametrize("size,stride", [((2, 2), (2, 2)), ((3, 3), (2, 2)), ((2, 3), (1, 2))])
def test_maxpool(size, stride):
    x = RNG.standard_normal((2, 3, 7, 8))
    y, arg = ref.maxpool_fwd(x, size, stride)
    r = RNG.standard_normal(y.shape)
    loss = lambda: (ref.maxpool_fwd(x, size, stride)[0] * r).sum()
    assert close(ref.maxpool_bwd(x.shape, arg, r), numeric_grad(loss, x))


def test_maxpool_ties_go_to_the_first():
    x = np.zeros((1, 1, 2, 2))
    y, arg = ref.maxpool_fwd(x)
    assert y[0, 0, 0, 0] == 0 and arg[0, 0, 0, 0] == 0
    dx = ref.maxpool_bwd(x.shape, arg, np.ones((1, 1, 1, 1)))
    assert dx.ravel().tolist() == [1, 0, 0, 0]


@pytest.mark.parametrize("fwd,bwd", [(ref.relu_fwd, ref.relu_bwd),
                                     (ref.sigmoid_fwd, ref.sigmoid_bwd)])
def test_activations(fwd, bwd):
    x = RNG.standard_normal((4, 5)) + 0.01  # keep off relu's kink
    r = RNG.standard_normal(x.shape)
    loss = lambda: (fwd(x) * r).sum()
    assert close(bwd(fwd(x), r), numeric_grad(loss, x))


def test_sigmoid_is_stable():
    assert np.isfinite(ref.sigmoid_fwd(np.array([-1000.0, 1000.0]))).all()


@pytest.mark.parametrize("fn", [ref.softmax_ce, ref.sigmoid_bce])
def test_losses(fn):
    z = RNG.standard_normal((5, 7)) * 3
    labels = np.array([0, 6, 3, 3, 1])
    loss, dz = fn(z, labels, 8)
    assert close(dz, numeric_grad(lambda: fn(z, labels, 8)[0], z))
    assert np.isfinite(fn(z * 1000, labels, 8)[0])  # stable for huge logits


def test_softmax_ce_value():
    loss, _ = ref.softmax_ce(np.zeros((2, 4)), np.array([1, 2]), 4)
    assert np.isclose(loss, 2 * np.log(4) / 4)


def test_sgd_matches_pytorch_semantics():
    p, g, v = np.array([1.0]), np.array([0.5]), np.array([0.0])
    p1, v1 = ref.sgd_step(p, g, v, lr=0.1, momentum=0.9, weight_decay=0.1)
    assert np.allclose(v1, 0.6) and np.allclose(p1, 1 - 0.1 * 0.6)
    p2, v2 = ref.sgd_step(p1, g, v1, lr=0.1, momentum=0.9, weight_decay=0.1, nesterov=True)
    d = 0.5 + 0.1 * p1
    assert np.allclose(v2, 0.9 * 0.6 + d) and np.allclose(p2, p1 - 0.1 * (d + 0.9 * v2))
