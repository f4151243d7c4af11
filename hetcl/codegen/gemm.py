"""Host side of kernels/gemm.cl.mako: choose parameters, build, and enqueue a (batched) GEMM."""
import contextlib

import numpy as np
import pyopencl as cl

from .launch import build_variant, choose, enqueue, record_launches  # noqa: F401  (re-exported)
from .buckets import gemm_bucket
from .params import GemmParams

_ARG_TYPES = ([np.int32] * 3 + [np.float32] * 2 + [None, np.int32, np.int32, np.int32] * 3)


_recorder = None  # a list while record_problems() is active


@contextlib.contextmanager
def record_problems():
    """Collect (m, n, k, trans_a, trans_b, batch) of every Gemm built inside (for the tuner)."""
    global _recorder
    _recorder, saved = [], _recorder
    try:
        yield _recorder
    finally:
        _recorder = saved


def tuned_params(device, m, n, k, trans_a, trans_b, batch):
    """The tuning DB's parameters for this shape class on this device, else the defaults."""
    return choose(device, GemmParams, "gemm", gemm_bucket(m, n, k, trans_a, trans_b, batch),
                  GemmParams.for_shape(device.features, m, n, k))


class Gemm:
    """C[b] = alpha * op(A[b]) @ op(B[b]) + beta * C[b] for fixed shapes on one device.

    Row-major operands; leading dimensions default to the packed ones. See the template header
    for the exact layout. Build happens here, once; ``__call__`` only enqueues.
    """

    def __init__(self, device, m, n, k, trans_a=False, trans_b=False, batch=1, params=None,
                 lda=None, ldb=None, ldc=None, epilogue=None):
        """epilogue = (act, S): store act(alpha * op(A) op(B) + bias[m]) into an NCHW batch
        (a conv's forward: column n is pixel n % S of image n // S; see the template);
        __call__ then takes bias=."""
        self.device = device
        self.m, self.n, self.k, self.batch = int(m), int(n), int(k), int(batch)
        self.trans_a, self.trans_b = bool(trans_a), bool(trans_b)
        self.lda = lda or (self.m if trans_a else self.k)
        self.ldb = ldb or (self.k if trans_b else self.n)
        self.ldc = ldc or self.n
        self.problem = (self.m, self.n, self.k, self.trans_a, self.trans_b, self.batch)
        if _recorder is not None:
            _recorder.append(self.problem)
        params = params or tuned_params(device, self.m, self.n, self.k, self.trans_a,
                                        self.trans_b, self.batch)
        reason = params.invalid_reason(device.features)
        if reason:
            raise ValueError(f"GEMM parameters {params} invalid on {device}: {reason}")
        self.epilogue = None if epilogue is None else (str(epilogue[0]), int(epilogue[1]))
        if self.epilogue and (self.trans_a and self.trans_b or self.batch != 1):
            raise ValueError("a GEMM with an epilogue takes one batch and not both transposes")
        self.params, program = build_variant(device, params, self._template_context)
        self.swap = self._swap(self.params)
        self.kernel = cl.Kernel(program, "gemm")  # its own: arguments are per instance
        self.kernel.set_scalar_arg_dtypes(_ARG_TYPES + ([None] if self.epilogue else []))
        rows, cols = (self.n, self.m) if self.swap else (self.m, self.n)
        self.global_size = self.params.global_size(rows, cols, self.batch)
        self.local_size = self.params.local_size()
        self.last_args = None
        self.tune = ("gemm", gemm_bucket(*self.problem), None)

    def _swap(self, params):
        # op(A)^T op(B)^T without local memory: compute C^T = B A instead (both operands then
        # untransposed, the fastest inner loop there) and let the kernel store C transposed.
        return self.trans_a and self.trans_b and not params.USE_LOCAL

    def _template_context(self, params):
        if self.epilogue:
            return {"trans_a": self.trans_a, "trans_b": self.trans_b, "epilogue": self.epilogue}
        if self._swap(params):
            return {"trans_a": False, "trans_b": False, "trans_c": True}
        return {"trans_a": self.trans_a, "trans_b": self.trans_b}

    def flops(self):
        return 2.0 * self.m * self.n * self.k * self.batch

    def __call__(self, a, b, c, alpha=1.0, beta=0.0, a_off=0, b_off=0, c_off=0,
                 a_stride=0, b_stride=0, c_stride=0, wait_for=None, queue=None, bias=None):
        """Enqueue on the device's queue; a, b, c are cl.Buffers or DeviceArrays. Returns the
        event. Offsets and batch strides are in elements. bias: the epilogue's (see __init__)."""
        buf = lambda x: getattr(x, "buffer", x)
        a_args = (buf(a), a_off, self.lda, a_stride)
        b_args = (buf(b), b_off, self.ldb, b_stride)
        if self.swap:
            mnk, ops = (self.n, self.m, self.k), b_args + a_args
        else:
            mnk, ops = (self.m, self.n, self.k), a_args + b_args
        args = mnk + (alpha, beta) + ops + (buf(c), c_off, self.ldc, c_stride)
        if self.epilogue:
            if bias is None:
                raise ValueError("this GEMM's epilogue needs bias=")
            args += (buf(bias),)
        return enqueue(self, queue, args, wait_for)


def gemm(device, a, b, trans_a=False, trans_b=False, params=None):
    """Convenience: numpy in, numpy out (2-D float32)."""
    from ..buffers import empty, to_device
    a = np.ascontiguousarray(a, np.float32)
    b = np.ascontiguousarray(b, np.float32)
    m, k = (a.shape[1], a.shape[0]) if trans_a else a.shape
    n = b.shape[0] if trans_b else b.shape[1]
    op = Gemm(device, m, n, k, trans_a, trans_b, params=params)
    c = empty(device, (m, n))
    op(to_device(device, a), to_device(device, b), c)
    return c.get()
