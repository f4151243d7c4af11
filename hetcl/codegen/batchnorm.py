"""Host side of kernels/batchnorm.cl.mako: batch normalisation (BatchNorm2D over NCHW, BatchNorm1D
over [n, C]: s = 1) with an optional activation fused after it, training and evaluation, forward
and backward. Layouts, the meaning of every buffer and the tunables are in the template header.

A batch split over several devices: each device's BnSums gives the totals of its rows, the host
adds them and every device finalizes with the whole batch's `count` (M values per channel);
one device alone uses BnSums(finalize=True). Each class builds its kernel once in the
constructor; ``__call__`` only enqueues and returns the event.
"""
import dataclasses

import numpy as np

from ..tuning.buckets import shape_bucket
from .eltwise import ACTIVATIONS, BiasGradParams, EltwiseParams
from .launch import Launch, choose, round_up
from .params import INT_MAX, KernelParams


@dataclasses.dataclass(frozen=True)
class BatchNormParams(EltwiseParams):
    """bn_apply, bn_bwd_dx: WGS work-items per group, WPT vectors per work-item, VW floats per
    vector. Defaults and space are EltwiseParams'."""
    template = "batchnorm.cl.mako"


@dataclasses.dataclass(frozen=True)
class BatchNormSumsParams(BiasGradParams):
    """bn_sums, bn_bwd_sums: bias_grad's reduction over [n][C][S] per channel, with its
    tunables, space and defaults (FPG channels per work-group, WGS work-items per channel, VW
    Kahan lanes, BLOCKED), summing two values per work-item instead of one."""
    template = "batchnorm.cl.mako"

    def local_mem_bytes(self):
        return 2 * super().local_mem_bytes()  # two sums per work-item

    @classmethod
    def for_shape(cls, features, n, c, s, layout="nfs"):
        """bias_grad's default for the "nfs" shape (BiasGradParams.for_shape: GPUs take 1024
        items per channel and float4 loads for S > 1, 64 neighbouring channels per group for
        S == 1), or the generic default where the two sums' local memory does not fit."""
        p = super().for_shape(features, n, c, s, layout)
        return p if p.valid(features) else cls.defaults(features).fit(layout, s)


@dataclasses.dataclass(frozen=True)
class BatchNormCoefParams(KernelParams):
    """bn_finalize, bn_eval_coef: WG work-items per group, one per channel; not tuned."""
    WG: int = 64

    template = "batchnorm.cl.mako"
    LOCAL = ("WG",)

    def global_size(self, c):
        return (round_up(c, self.WG),)

    @classmethod
    def defaults(cls, features):
        return cls()


def _shape(n, c, s):
    n, c, s = int(n), int(c), int(s)
    if min(n, c, s) < 1:
        raise ValueError(f"shape n={n}, c={c}, s={s}: every dimension must be >= 1")
    # indices are 32-bit ints in the kernels, and the last work-group's run past n*c*s by up
    # to WGS*WPT*VW - 1 (WPT*VW <= 64, WGS <= 4096)
    if n * c * s + (1 << 18) > INT_MAX:
        raise ValueError(f"n*c*s = {n * c * s} elements is too many for one launch")
    return n, c, s


def _act(act):
    if act not in ACTIVATIONS:
        raise ValueError(f"act={act!r}: expected one of {ACTIVATIONS}")
    return act


def _constants(eps, momentum=0.1):
    eps, momentum = float(eps), float(momentum)
    if not (0 < eps < float("inf") and 0 <= momentum <= 1):
        raise ValueError(f"eps={eps}, momentum={momentum}: need eps > 0 and 0 <= momentum <= 1")
    return eps, momentum


def _count(count):
    if not count > 1:  # (also NaN)
        raise ValueError(f"count={count}: batch norm needs more than one value per channel")
    return np.float32(count)


def _sums_launch(device, kernel, n, c, s, rest, params, n_args, **context):
    """The Launch of a reduction kernel (bn_sums, bn_bwd_sums) of shape n, c, s."""
    bucket = shape_bucket(n, f"{c}x{s} {rest}")
    fit = lambda p: p.fit("nfs", s)  # noqa: E731
    params = params or fit(choose(device, BatchNormSumsParams, kernel, bucket,
                                  BatchNormSumsParams.for_shape(device.features, n, c, s)))
    # Tuning candidates: the space's points with VW fitted to this shape.
    candidates = lambda: list(dict.fromkeys(  # noqa: E731
        fit(p) for p in BatchNormSumsParams.valid_space(device.features)))
    types = [None] * n_args + ([np.float32] if context.get("finalize") else [])
    return Launch(device, params, kernel, types, lambda p: p.global_size(c),
                  tune=(kernel, bucket, candidates), fit=fit, kernel=kernel, n=n, c=c, s=s,
                  **context)


def _eltwise_launch(device, kernel, n, c, s, act, params, arg_types):
    """The Launch of an element-wise kernel (bn_apply, bn_bwd_dx) over n*c*s outputs."""
    bucket = shape_bucket(n, f"{c}x{s} {act}")
    params = params or choose(device, BatchNormParams, kernel, bucket,
                              BatchNormParams.defaults(device.features))
    return Launch(device, params, kernel, arg_types, lambda p: p.global_size(n * c * s),
                  tune=(kernel, bucket, None), kernel=kernel, n=n, c=c, s=s, act=act)


def _coef_launch(device, kernel, c, n_args, **context):
    """The Launch of a per-channel kernel (bn_finalize, bn_eval_coef); not tuned."""
    c = _shape(1, c, 1)[1]
    types = [None] * n_args + ([np.float32] if kernel == "bn_finalize" else [])
    return Launch(device, BatchNormCoefParams.defaults(device.features), kernel, types,
                  lambda p: p.global_size(c), kernel=kernel, c=c, **context)


class BnSums:
    """totals[0*C + c] = sum of x, totals[1*C + c] = sum of x*x over this device's n rows and
    s positions (x "nfs"). finalize=True also does BnFinalize's work in the same launch (one
    device: no separate launch); __call__ then takes BnFinalize's arguments after totals."""

    def __init__(self, device, n, c, s, finalize=False, eps=1e-5, momentum=0.1, params=None):
        self.n, self.c, self.s = _shape(n, c, s)
        self.finalize = bool(finalize)
        extra = dict(zip(("eps", "momentum"), _constants(eps, momentum))) if self.finalize \
            else {}
        self.launch = _sums_launch(device, "bn_sums", self.n, self.c, self.s,
                                   f"fin{int(self.finalize)}", params, 8 if self.finalize else 2,
                                   finalize=int(self.finalize), **extra)
        self.params = self.launch.params

    def __call__(self, x, totals, gamma=None, beta=None, running_mean=None, running_var=None,
                 saved=None, coef=None, count=None, wait_for=None):
        if not self.finalize:
            return self.launch(x, totals, wait_for=wait_for)
        if any(a is None for a in (gamma, beta, running_mean, running_var, saved, coef)):
            raise ValueError("BnSums(finalize=True) takes BnFinalize's arguments after totals")
        return self.launch(x, totals, gamma, beta, running_mean, running_var, saved, coef,
                           _count(count), wait_for=wait_for)


class BnFinalize:
    """Per channel, from the totals of the whole batch (M = count values per channel, every
    device's rows): saved = (mean, invstd), coef = (scale, shift), running_mean / running_var
    updated in place (the unbiased variance into running_var, as PyTorch)."""

    def __init__(self, device, c, eps=1e-5, momentum=0.1):
        eps, momentum = _constants(eps, momentum)
        self.launch = _coef_launch(device, "bn_finalize", c, 7, eps=eps, momentum=momentum)
        self.params = self.launch.params

    def __call__(self, totals, gamma, beta, running_mean, running_var, saved, coef, count,
                 wait_for=None):
        return self.launch(totals, gamma, beta, running_mean, running_var, saved, coef,
                           _count(count), wait_for=wait_for)


class BnApply:
    """y = act(x*coef[c] + coef[C + c]) over [n, C, s] ("nfs"); y is another buffer than x."""

    def __init__(self, device, n, c, s, act, params=None):
        self.n, self.c, self.s = _shape(n, c, s)
        self.act = _act(act)
        self.launch = _eltwise_launch(device, "bn_apply", self.n, self.c, self.s, self.act,
                                      params, [None] * 3)
        self.params = self.launch.params

    def __call__(self, x, coef, y, wait_for=None):
        return self.launch(x, coef, y, wait_for=wait_for)


class BnEvalCoef:
    """Evaluation mode: coef = (scale, shift) from the running statistics (then BnApply)."""

    def __init__(self, device, c, eps=1e-5):
        self.launch = _coef_launch(device, "bn_eval_coef", c, 5, eps=_constants(eps)[0])
        self.params = self.launch.params

    def __call__(self, gamma, beta, running_mean, running_var, coef, wait_for=None):
        return self.launch(gamma, beta, running_mean, running_var, coef, wait_for=wait_for)


class BnBwdSums:
    """With dz = dy*act'(y) and xhat = (x - mean)*invstd (saved from the forward): totals =
    (sum dz, sum dz*xhat) over this device's rows, and dbeta, dgamma = the same sums
    (overwritten; the host adds several devices' as it adds any gradient)."""

    def __init__(self, device, n, c, s, act, params=None):
        self.n, self.c, self.s = _shape(n, c, s)
        self.act = _act(act)
        self.launch = _sums_launch(device, "bn_bwd_sums", self.n, self.c, self.s, self.act,
                                   params, 7, act=self.act)
        self.params = self.launch.params

    def __call__(self, x, y, dy, saved, totals, dgamma, dbeta, wait_for=None):
        return self.launch(x, y, dy, saved, totals, dgamma, dbeta, wait_for=wait_for)


class BnBwdDx:
    """dx = coef[c]*(dz - (totals[c] + xhat*totals[C + c]) / M), totals of the whole batch (M =
    count values per channel), coef the forward's."""

    def __init__(self, device, n, c, s, act, params=None):
        self.n, self.c, self.s = _shape(n, c, s)
        self.act = _act(act)
        self.launch = _eltwise_launch(device, "bn_bwd_dx", self.n, self.c, self.s, self.act,
                                      params, [None] * 7 + [np.float32])
        self.params = self.launch.params

    def __call__(self, x, y, dy, saved, coef, totals, dx, count, wait_for=None):
        return self.launch(x, y, dy, saved, coef, totals, dx, _count(count), wait_for=wait_for)


__all__ = ["BatchNormParams", "BatchNormSumsParams", "BatchNormCoefParams", "BnSums",
           "BnFinalize", "BnApply", "BnEvalCoef", "BnBwdSums", "BnBwdDx"]
