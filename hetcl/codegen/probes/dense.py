"""Probes of the GEMM, loss and update kernels (see the package's docstring)."""
import numpy as np

from ..gemm import Gemm
from ..loss import LABEL_TYPES, SigmoidBCE, SoftmaxCE
from ..update import AdamMulti, Axpby, SGDMulti, SGDStep, SumSquares
from . import NUMPY_ACTIVATIONS, relative_error


def gemm(device, params, trans_a=False, trans_b=False, trans_c=False, epilogue=None):
    """The prover's check of one GEMM variant (prover.py): the largest error, relative to the
    largest magnitude, of a tiny problem against numpy. The sizes are off the tile multiples,
    so edge tiles run too; the template context selects the same program the caller built
    (trans_c: both transposes without local memory, which Gemm computes as C^T = B A)."""
    from ...backend.buffers import empty, to_device
    rng = np.random.default_rng(0)
    if trans_c:
        trans_a = trans_b = True
    m, k = params.MWG + 3, params.KWG + 7
    n = 2 * epilogue[1] if epilogue else params.NWG + 5
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    ref = (a.T if trans_a else a) @ (b.T if trans_b else b)
    op = Gemm(device, m, n, k, trans_a, trans_b, params=params, epilogue=epilogue)
    if epilogue:
        bias = rng.standard_normal(m).astype(np.float32)
        act, s = epilogue
        ref = NUMPY_ACTIVATIONS[act](ref + bias[:, None]).reshape(m, n // s, s).transpose(1, 0, 2)
        out = empty(device, ref.shape)
        op(to_device(device, a), to_device(device, b), out, bias=to_device(device, bias))
    else:
        c0 = rng.standard_normal((m, n)).astype(np.float32)
        out = to_device(device, c0)
        op(to_device(device, a), to_device(device, b), out, alpha=1.5, beta=0.5)
        ref = 1.5 * ref + 0.5 * c0
    return relative_error(out.get(), ref)


def loss(device, params, n, classes, loss, label_type):
    """The prover's check of one loss variant (prover.py), on the n x classes it was built for:
    the largest error of dlogits and row_loss, relative to the largest magnitude, against
    numpy (inf where a row_correct differs), the labels read from an offset and the loss
    divided by a global_n larger than n (a shard)."""
    from ...backend.buffers import empty, to_device
    rng = np.random.default_rng(0)
    logits = (3 * rng.standard_normal((n, classes))).astype(np.float32)
    labels = rng.integers(0, classes, n + 1).astype(LABEL_TYPES[label_type])  # from element 1
    global_n = n + 3
    dlogits = empty(device, (n, classes)).fill(np.nan)
    row_loss = empty(device, (n,)).fill(np.nan)
    correct = empty(device, (n,), np.int32).fill(-1)
    op = {"softmax_ce": SoftmaxCE, "sigmoid_bce": SigmoidBCE}[loss]
    op(device, n, classes, label_type, params=params)(
        to_device(device, logits), to_device(device, labels), dlogits, row_loss, correct,
        global_n, labels_off=1)
    z, label = logits.astype(np.float64), labels[1:].astype(np.int64)
    t = np.zeros_like(z)
    t[np.arange(n), label] = 1.0  # the one-hot target
    if loss == "softmax_ce":
        shifted = z - z.max(axis=1, keepdims=True)
        lse = np.log(np.exp(shifted).sum(axis=1))
        ref_loss, ref_grad = lse - shifted[np.arange(n), label], np.exp(shifted - lse[:, None]) - t
    else:
        ref_loss = (np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))).sum(axis=1)
        ref_grad = 1 / (1 + np.exp(-z)) - t
    if not np.array_equal(correct.get(), logits.argmax(axis=1) == label):
        return float("inf")
    return max(relative_error(dlogits.get(), ref_grad / global_n),
               relative_error(row_loss.get(), ref_loss / global_n))


def update(device, params, kernel, size=None, sizes=None, nesterov=0, decoupled=0, clip=0):
    """The prover's check of one update variant (prover.py), on the size(s) it was built for:
    the largest error, relative to the largest magnitude, of y (axpby, b != 0), of p and v
    after one SGD step with momentum and weight decay, of p, m and v after the third Adam
    step, or of a sum of squares, against numpy. Clipping variants scale the gradients by
    0.375."""
    from ...backend.buffers import to_device
    rng = np.random.default_rng(0)
    if kernel == "axpby":
        x, y0 = rng.standard_normal((2, size)).astype(np.float32)
        y = to_device(device, y0)
        Axpby(device, size, params=params)(to_device(device, x), y, 1.5, 0.5)
        return relative_error(y.get(), 1.5 * x + 0.5 * y0.astype(np.float64))
    gscale = 0.375 if clip else None
    if kernel == "adam_multi":
        return _adam(device, params, sizes, decoupled, gscale, rng)
    if kernel == "sumsq_multi":
        grads = [to_device(device, rng.standard_normal(n).astype(np.float32)) for n in sizes]
        got = SumSquares(device, sizes, params=params)([(g.buffer,) for g in grads])
        ref = sum(float((g.get().astype(np.float64) ** 2).sum()) for g in grads)
        return abs(got - ref) / max(1.0, ref)
    lr, momentum, weight_decay = 0.1, 0.9, 0.01
    host = [rng.standard_normal((3, n)).astype(np.float32) for n in sizes or (size,)]  # p, g, v
    tensors = [tuple(to_device(device, a) for a in pgv) for pgv in host]
    if kernel == "sgd":
        SGDStep(device, size, bool(nesterov), params=params)(*tensors[0], lr, momentum, weight_decay)
    else:
        SGDMulti(device, sizes, bool(nesterov), params=params, clip=bool(clip))(
            tensors, lr, momentum, weight_decay, gscale)
    error = 0.0
    for (p, g, v), (p_dev, _, v_dev) in zip(host, tensors):
        d = g * (gscale or 1.0) + weight_decay * p.astype(np.float64)
        v = momentum * v + d
        p = p - lr * (d + momentum * v if nesterov else v)
        error = max(error, relative_error(p_dev.get(), p), relative_error(v_dev.get(), v))
    return error


def adam_reference(p, g, m, v, t, lr, beta1, beta2, eps, weight_decay, decoupled):
    """One Adam (decoupled: AdamW) step of PyTorch's, in float64 -> (p, m, v)."""
    p, g = p.astype(np.float64), g.astype(np.float64)
    if decoupled:
        p = p * (1 - lr * weight_decay)
    else:
        g = g + weight_decay * p
    m = m + (1 - beta1) * (g - m)
    v = beta2 * v + (1 - beta2) * g * g
    denom = np.sqrt(v) / np.sqrt(1 - beta2 ** t) + eps
    return p - lr / (1 - beta1 ** t) * m / denom, m, v


def _adam(device, params, sizes, decoupled, gscale, rng):
    """Three Adam steps from m = v = 0 (the bias corrections move with t)."""
    from ...backend.buffers import to_device
    hyper = (0.01, 0.9, 0.999, 1e-8, 0.1)
    host = [[rng.standard_normal(n), rng.standard_normal(n), np.zeros(n), np.zeros(n)]
            for n in sizes]
    tensors = [tuple(to_device(device, a.astype(np.float32)) for a in t) for t in host]
    kernel = AdamMulti(device, sizes, bool(decoupled), params=params, clip=gscale is not None)
    for t in (1, 2, 3):
        kernel([tuple(a.buffer for a in group) for group in tensors], *hyper, t, gscale)
        for state in host:
            p, g, m, v = state
            state[0], state[2], state[3] = adam_reference(p, g * (gscale or 1.0), m, v, t,
                                                          *hyper, decoupled)
    return max(relative_error(dev.get(), ref) for group, state in zip(tensors, host)
               for dev, ref in zip(group[::2] + group[3:], state[::2] + state[3:]))
