"""Host side of kernels/update.cl.mako: the SGD and Adam/AdamW steps (PyTorch semantics) and
y = a*x + b*y.

All are flat element-wise kernels over ``size`` floats, so their parameters are eltwise's
(WGS, WPT, VW) on another template. The scalars (lr, momentum, ...) are kernel arguments, not
compile-time constants: a learning-rate schedule costs no rebuild.
"""
import dataclasses

import numpy as np

from ..backend.buffers import empty
from .eltwise import EltwiseParams
from .launch import Launch
from .params import INT_MAX


@dataclasses.dataclass(frozen=True)
class UpdateParams(EltwiseParams):
    """WGS work-items per group, WPT vectors per work-item, VW floats per vector; see the header
    of kernels/update.cl.mako. Defaults and space are EltwiseParams'."""
    template = "update.cl.mako"


def _size(size):
    size = int(size)
    if size < 1:
        raise ValueError(f"size={size} must be >= 1")
    if size + 4096 > INT_MAX:
        raise ValueError(f"size={size} is too many elements for one launch")
    return size


class SGDStep:
    """In place on p and v (float32 [size]), as tests/reference.py sgd_step:
    d = g + weight_decay*p; v = momentum*v + d; p -= lr * (d + momentum*v if nesterov else v).
    With momentum == 0, v is set to d without being read."""

    def __init__(self, device, size, nesterov=False, params=None):
        self.size = _size(size)
        self.nesterov = bool(nesterov)
        self.params = params or UpdateParams.defaults(device.features)
        self.launch = Launch(device, self.params, "sgd",
                             [None, None, None, np.float32, np.float32, np.float32],
                             lambda p: p.global_size(self.size),
                             kernel="sgd", size=self.size, nesterov=int(self.nesterov))
        self.params = self.launch.params

    def __call__(self, p, g, v, lr, momentum, weight_decay, wait_for=None):
        return self.launch(p, g, v, float(lr), float(momentum), float(weight_decay),
                           wait_for=wait_for)


class _Multi:
    """One update kernel over several tensors in one launch (sizes: their element counts; at most
    MAX_TENSORS, as OpenCL guarantees kernels only 1 KB of arguments: MAX_TENSORS * BUFFERS
    pointers of 8 bytes and the scalars): the same results as one launch per tensor. Called
    with [(buffers of tensor 0), ...] in the order of sizes, then the kernel's scalars."""
    kernel = None       # "sgd_multi" / "adam_multi" / "sumsq_multi"
    BUFFERS = 0         # buffers per tensor
    OUTPUTS = 0         # buffers after the tensors'
    MAX_TENSORS = 0

    def __init__(self, device, sizes, params=None, scalars=0, **context):
        """scalars: the kernel's float arguments after its buffers."""
        self.sizes = tuple(_size(n) for n in sizes)
        if not 1 <= len(self.sizes) <= self.MAX_TENSORS:
            raise ValueError(f"{len(self.sizes)} tensors: 1 to {self.MAX_TENSORS} per launch")
        self.params = params or UpdateParams.defaults(device.features)
        self.launch = Launch(device, self.params, self.kernel,
                             [None] * (self.BUFFERS * len(self.sizes) + self.OUTPUTS) +
                             [np.float32] * scalars,
                             self._global_size, kernel=self.kernel, sizes=self.sizes, **context)
        self.params = self.launch.params

    def _global_size(self, params):
        per_group = params.elements_per_group()
        return (sum(-(-n // per_group) for n in self.sizes) * params.WGS,)

    def _enqueue(self, tensors, scalars=(), wait_for=None, outputs=()):
        buffers = [b for group in tensors for b in group]
        return self.launch(*buffers, *outputs, *(float(x) for x in scalars), wait_for=wait_for)


class _Update(_Multi):
    """An optimizer's step over several tensors. clip: the kernel takes the gradients times a
    last scalar, gscale (global-norm clipping; see the template's header)."""
    SCALARS = 0

    def __init__(self, device, sizes, params=None, clip=False, **context):
        self.clip = bool(clip)
        super().__init__(device, sizes, params, self.SCALARS + self.clip, clip=int(clip),
                         **context)

    def _step(self, tensors, scalars, gscale, wait_for):
        if self.clip != (gscale is not None):
            raise ValueError("gscale goes with clip=True, and only with it")
        return self._enqueue(tensors, scalars + ((gscale,) if self.clip else ()), wait_for)


class SGDMulti(_Update):
    """SGDStep over several tensors: [(p, g, v), ...]."""
    kernel, BUFFERS, SCALARS, MAX_TENSORS = "sgd_multi", 3, 3, 32

    def __init__(self, device, sizes, nesterov=False, params=None, clip=False):
        super().__init__(device, sizes, params, clip, nesterov=int(nesterov))

    def __call__(self, tensors, lr, momentum, weight_decay, gscale=None, wait_for=None):
        return self._step(tensors, (lr, momentum, weight_decay), gscale, wait_for)


class AdamMulti(_Update):
    """PyTorch's Adam (decoupled=False) or AdamW (True) over several tensors, in place on p, m
    and v: [(p, g, m, v), ...], step t >= 1 (see the template's header for the update)."""
    kernel, BUFFERS, SCALARS, MAX_TENSORS = "adam_multi", 4, 7, 24

    def __init__(self, device, sizes, decoupled=False, params=None, clip=False):
        super().__init__(device, sizes, params, clip, decoupled=int(decoupled))

    def __call__(self, tensors, lr, beta1, beta2, eps, weight_decay, t, gscale=None,
                 wait_for=None):
        step_size = lr / (1.0 - beta1 ** t)
        bc2_sqrt = (1.0 - beta2 ** t) ** 0.5
        return self._step(tensors, (lr, beta1, beta2, eps, weight_decay, step_size, bc2_sqrt),
                          gscale, wait_for)


class SumSquares(_Multi):
    """The sum of squares of several tensors [(g,), ...], in float64 on the host from one
    partial sum per work-group (the power-of-two work-groups of UpdateParams' space)."""
    kernel, BUFFERS, OUTPUTS, MAX_TENSORS = "sumsq_multi", 1, 1, 100

    def __init__(self, device, sizes, params=None):
        params = params or UpdateParams.defaults(device.features)
        if params.WGS & (params.WGS - 1):
            raise ValueError(f"sumsq_multi reduces over a tree: WGS={params.WGS} must be a "
                             f"power of two")
        super().__init__(device, sizes, params)
        self.partial = empty(device, (self.launch.global_size[0] // self.params.WGS,))

    def __call__(self, tensors):
        """-> the sum of squares (waits for the device)."""
        self._enqueue(tensors, outputs=(self.partial,))
        return float(self.partial.get().astype(np.float64).sum())


class Axpby:
    """y = a*x + b*y over float32 [size]. b == 0 does not read y (it may hold NaN); x may be y."""

    def __init__(self, device, size, params=None):
        self.size = _size(size)
        self.params = params or UpdateParams.defaults(device.features)
        self.launch = Launch(device, self.params, "axpby", [None, None, np.float32, np.float32],
                             lambda p: p.global_size(self.size),
                             kernel="axpby", size=self.size)
        self.params = self.launch.params

    def __call__(self, x, y, a, b, wait_for=None):
        return self.launch(x, y, float(a), float(b), wait_for=wait_for)
