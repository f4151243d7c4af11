"""Probes of the element-wise kernels: bias + activation, activation backward, bias gradient
(see the package's docstring)."""
import numpy as np

from ..eltwise import ActBwd, BiasAct, BiasGrad
from . import NUMPY_ACTIVATIONS, relative_error

# dy * act'(x), written with the activation's output y (as the kernel has it)
_DACT = {"none": lambda y, dy: dy, "relu": lambda y, dy: dy * (y > 0),
         "sigmoid": lambda y, dy: dy * y * (1 - y)}


def _to_layout(x, layout):
    """[n][f][s] -> `layout` ("fns" = [f][n][s])."""
    return np.ascontiguousarray(x if layout == "nfs" else x.transpose(1, 0, 2))


def _probe_bias_act(device, params, rng, n, f, s, layout, act, bias):
    from ...backend.buffers import empty, to_device
    z = (4 * rng.standard_normal((n, f, s))).astype(np.float32)
    b = rng.standard_normal(f).astype(np.float32)
    y = empty(device, (n, f, s)).fill(np.nan)
    BiasAct(device, n, f, s, act, layout, bias=bool(bias), params=params)(
        to_device(device, _to_layout(z, layout)), to_device(device, b) if bias else None, y)
    return relative_error(y.get(), NUMPY_ACTIVATIONS[act](z.astype(np.float64) + (b[:, None] if bias else 0)))


def _probe_act_bwd(device, params, rng, n, f, s, layout, act):
    from ...backend.buffers import empty, to_device
    y = NUMPY_ACTIVATIONS[act](4 * rng.standard_normal((n, f, s))).astype(np.float32)
    dy = rng.standard_normal((n, f, s)).astype(np.float32)
    dz = empty(device, (n * f * s,)).fill(np.nan)
    ActBwd(device, n, f, s, act, layout, params=params)(
        to_device(device, y), to_device(device, dy), dz)
    ref = _DACT[act](y.astype(np.float64), dy)
    return relative_error(dz.get(), _to_layout(ref, layout).ravel())


def _probe_bias_grad(device, params, rng, n, f, s, layout, accumulate):
    from ...backend.buffers import to_device
    dz = rng.standard_normal((n, f, s)).astype(np.float32)
    db0 = rng.standard_normal(f).astype(np.float32)  # overwritten, or added to (accumulate)
    db = to_device(device, db0)
    BiasGrad(device, n, f, s, layout, accumulate=bool(accumulate), params=params)(
        to_device(device, _to_layout(dz, layout)), db)
    ref = dz.sum(axis=(0, 2), dtype=np.float64) + (db0 if accumulate else 0)
    return relative_error(db.get(), ref)


def eltwise(device, params, kernel, **context):
    """The prover's check of one eltwise variant (prover.py): the largest error, relative to
    the largest magnitude, of the kernel the context names (bias_act, act_bwd or bias_grad, on
    the shape, layout and activation it was built for) against numpy. Outputs start as NaN or
    as values the kernel must overwrite, so an element the variant misses shows."""
    run = {"bias_act": _probe_bias_act, "act_bwd": _probe_act_bwd,
           "bias_grad": _probe_bias_grad}[kernel]
    return run(device, params, np.random.default_rng(0), **context)

