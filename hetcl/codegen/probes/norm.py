"""Probes of the batch-normalisation kernels (kernels/batchnorm.cl.mako; see the package's
docstring), and the numpy reference of batch norm, forward and backward, in float64 (the tests
check the kernels against it too)."""
import numpy as np

from ..batchnorm import BnApply, BnBwdDx, BnBwdSums, BnEvalCoef, BnFinalize, BnSums
from . import NUMPY_ACTIVATIONS, relative_error
from .eltwise import _DACT


def bn_totals_reference(x):
    """[2, C]: (sum x, sum x*x) per channel of x [n, C, S]."""
    x = np.asarray(x, np.float64)
    return np.stack([x.sum(axis=(0, 2)), (x * x).sum(axis=(0, 2))])


def bn_finalize_reference(totals, gamma, beta, running_mean, running_var, count, eps=1e-5,
                          momentum=0.1):
    """-> saved [2, C] (mean, invstd), coef [2, C] (scale, shift), the new running_mean and
    running_var (unbiased variance, as PyTorch), from the totals of `count` values a channel."""
    t = np.asarray(totals, np.float64).reshape(2, -1)
    mean = t[0] / count
    var = np.maximum(t[1] / count - mean ** 2, 0)
    invstd = 1 / np.sqrt(var + eps)
    scale = gamma * invstd
    coef = np.stack([scale, beta - mean * scale])
    rm = (1 - momentum) * np.asarray(running_mean, np.float64) + momentum * mean
    rv = (1 - momentum) * np.asarray(running_var, np.float64) + \
        momentum * var * count / (count - 1)
    return np.stack([mean, invstd]), coef, rm, rv


def bn_eval_coef_reference(gamma, beta, running_mean, running_var, eps=1e-5):
    """coef [2, C] (scale, shift) of evaluation mode."""
    scale = np.asarray(gamma, np.float64) / np.sqrt(np.asarray(running_var, np.float64) + eps)
    return np.stack([scale, beta - running_mean * scale])


def bn_apply_reference(x, coef, act):
    """act(x*scale + shift) per channel of x [n, C, S]."""
    coef = np.asarray(coef, np.float64).reshape(2, -1)
    return NUMPY_ACTIVATIONS[act](x * coef[0][:, None] + coef[1][:, None])


def bn_forward_reference(x, gamma, beta, act="none", eps=1e-5):
    """Training-mode batch norm of the whole batch x [n, C, S] then act: -> y, saved [2, C]
    (mean, invstd)."""
    x = np.asarray(x, np.float64)
    mean, var = x.mean(axis=(0, 2)), x.var(axis=(0, 2))
    invstd = 1 / np.sqrt(var + eps)
    xhat = (x - mean[:, None]) * invstd[:, None]
    return NUMPY_ACTIVATIONS[act](xhat * gamma[:, None] + beta[:, None]), np.stack([mean, invstd])


def bn_backward_reference(x, y, dy, gamma, saved, act="none"):
    """Batch norm's backward (PyTorch's batch_norm_backward, training mode) of the whole batch:
    -> dx, dgamma, dbeta. y is the activation's output; dy the loss gradient of y."""
    x, dy = np.asarray(x, np.float64), np.asarray(dy, np.float64)
    mean, invstd = np.asarray(saved, np.float64).reshape(2, -1)
    dz = _DACT[act](np.asarray(y, np.float64), dy)
    xhat = (x - mean[:, None]) * invstd[:, None]
    m = x.shape[0] * x.shape[2]
    dbeta, dgamma = dz.sum(axis=(0, 2)), (dz * xhat).sum(axis=(0, 2))
    dx = (gamma * invstd)[:, None] * (dz - (dbeta[:, None] + xhat * dgamma[:, None]) / m)
    return dx, dgamma, dbeta


def _inputs(rng, n, c, s):
    """x [n, c, s] with per-channel offsets (the variance does not come from the mean alone),
    gamma, beta, running_mean, running_var (positive)."""
    x = (rng.standard_normal((n, c, s)) * 2 + rng.standard_normal((c, 1))).astype(np.float32)
    vectors = rng.standard_normal((4, c)).astype(np.float32)
    vectors[3] = np.abs(vectors[3]) + 0.5
    return x, vectors


def _probe_sums(device, params, rng, n, c, s, finalize, eps=1e-5, momentum=0.1):
    from ...backend.buffers import empty, to_device
    x, (gamma, beta, rm, rv) = _inputs(rng, n, c, s)
    totals = empty(device, (2, c)).fill(np.nan)
    op = BnSums(device, n, c, s, bool(finalize), eps, momentum, params=params)
    ref = bn_totals_reference(x)
    if not finalize:
        op(to_device(device, x), totals)
        return relative_error(totals.get(), ref)
    count = 2.5 * n * s  # as if other devices held more of the batch
    outs = [to_device(device, v) for v in (gamma, beta, rm, rv)] + \
        [empty(device, (2, c)).fill(np.nan) for _ in range(2)]
    op(to_device(device, x), totals, *outs, count)
    refs = (ref,) + bn_finalize_reference(ref, gamma, beta, rm, rv, count, eps, momentum)
    got = [totals.get()] + [outs[k].get() for k in (4, 5, 2, 3)]
    return max(relative_error(g, r) for g, r in zip(got, refs))


def _probe_finalize(device, params, rng, c, eps, momentum):
    from ...backend.buffers import empty, to_device
    x, (gamma, beta, rm, rv) = _inputs(rng, 5, c, 3)
    totals = bn_totals_reference(x).astype(np.float32)
    outs = [to_device(device, v) for v in (gamma, beta, rm, rv)] + \
        [empty(device, (2, c)).fill(np.nan) for _ in range(2)]
    BnFinalize(device, c, eps, momentum)(to_device(device, totals), *outs, 15.0)
    refs = bn_finalize_reference(totals, gamma, beta, rm, rv, 15.0, eps, momentum)
    return max(relative_error(outs[k].get(), r) for k, r in zip((4, 5, 2, 3), refs))


def _probe_eval_coef(device, params, rng, c, eps):
    from ...backend.buffers import empty, to_device
    _, vectors = _inputs(rng, 1, c, 1)
    coef = empty(device, (2, c)).fill(np.nan)
    BnEvalCoef(device, c, eps)(*(to_device(device, v) for v in vectors), coef)
    return relative_error(coef.get(), bn_eval_coef_reference(*vectors, eps))


def _probe_apply(device, params, rng, n, c, s, act):
    from ...backend.buffers import empty, to_device
    x, (scale, shift, _, _) = _inputs(rng, n, c, s)
    coef = np.stack([scale, shift])
    y = empty(device, (n, c, s)).fill(np.nan)
    BnApply(device, n, c, s, act, params=params)(to_device(device, x), to_device(device, coef), y)
    return relative_error(y.get(), bn_apply_reference(x, coef, act))


def _backward_inputs(rng, n, c, s, act):
    """x, y, dy, gamma, saved (of x's own statistics), totals (of the backward)."""
    x, (gamma, beta, _, _) = _inputs(rng, n, c, s)
    y, saved = bn_forward_reference(x, gamma, beta, act)
    dy = rng.standard_normal(x.shape).astype(np.float32)
    return x, y.astype(np.float32), dy, gamma, saved.astype(np.float32)


def _probe_bwd_sums(device, params, rng, n, c, s, act):
    from ...backend.buffers import empty, to_device
    x, y, dy, gamma, saved = _backward_inputs(rng, n, c, s, act)
    outs = [empty(device, shape).fill(np.nan) for shape in ((2, c), (c,), (c,))]
    BnBwdSums(device, n, c, s, act, params=params)(
        *(to_device(device, a) for a in (x, y, dy, saved)), *outs)
    _, dgamma, dbeta = bn_backward_reference(x, y, dy, gamma, saved, act)
    refs = (np.stack([dbeta, dgamma]), dgamma, dbeta)
    return max(relative_error(o.get(), r) for o, r in zip(outs, refs))


def _probe_bwd_dx(device, params, rng, n, c, s, act):
    from ...backend.buffers import empty, to_device
    x, y, dy, gamma, saved = _backward_inputs(rng, n, c, s, act)
    dx_ref, dgamma, dbeta = bn_backward_reference(x, y, dy, gamma, saved, act)
    coef = np.stack([gamma * saved[1], np.zeros(c)]).astype(np.float32)
    totals = np.stack([dbeta, dgamma]).astype(np.float32)
    dx = empty(device, (n, c, s)).fill(np.nan)
    BnBwdDx(device, n, c, s, act, params=params)(
        *(to_device(device, a) for a in (x, y, dy, saved, coef, totals)), dx, float(n * s))
    return relative_error(dx.get(), dx_ref)


def batchnorm(device, params, kernel, **context):
    """The prover's check of one batchnorm.cl.mako variant (prover.py): the largest error,
    relative to the largest magnitude of each output, of the kernel the context names on the
    shape, activation and constants it was built for, against numpy in float64. Outputs start
    as NaN, so an element the variant misses shows."""
    run = {"bn_sums": _probe_sums, "bn_finalize": _probe_finalize, "bn_eval_coef": _probe_eval_coef,
           "bn_apply": _probe_apply, "bn_bwd_sums": _probe_bwd_sums, "bn_bwd_dx": _probe_bwd_dx}
    return run[kernel](device, params, np.random.default_rng(0), **context)
