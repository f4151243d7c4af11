"""Bound layers: the kernels of one layer on one device for one batch size (see layers.py for
the forward/backward contract). Built once; forward and backward only enqueue.

Conv2D is im2col + the tuned GEMM. The batch is processed in chunks of images so that the column
buffer [C*KH*KW, chunk*OH*OW] stays within a memory budget. Forward and backward work in the
[F, N*OH*OW] layout ("fns") that a GEMM with the weights produces: the forward is one GEMM per
chunk whose epilogue adds the bias, applies the activation and stores NCHW (no [F, N*OH*OW]
round trip); the backward turns dy into dz in "fns"
(activation derivative fused), and dW is a split-K GEMM per chunk, accumulated over chunks.
(Reading the columns inside the GEMMs instead - implicit im2col - was measured slower on a GPU:
docs/benchmarks.md, 'Layers'.) dx from dz: codegen/conv_dx.py (col2im, or for stride 1 a
convolution of dz with the flipped weights, whichever the tuning DB says is faster).
"""
import numpy as np

from ..backend.buffers import empty
from ..codegen.avgpool import AvgPoolBwd, AvgPoolFwd
from ..codegen.batchnorm import (BnApply, BnBwdDx, BnBwdSums, BnEvalCoef, BnFinalize,
                                 BnSums)
from ..codegen.conv import Im2Col
from ..codegen.conv_dx import ConvBackwardData
from ..codegen.dropout import WORD, DropoutBwd, DropoutFwd, philox_key
from ..codegen.eltwise import ActBwd, BiasAct, BiasGrad
from ..codegen.gemm import Gemm
from ..codegen.pool import MaxPoolBwd, MaxPoolFwd
from ..codegen.splitk import SplitKGemm
from ..codegen.update import Axpby

# The bytes of a conv layer's column buffer (one chunk of its images); docs/benchmarks.md,
# 'Layers'. GPUs: at least COL_BUDGET_BYTES["gpu"], or COL_BUDGET_SHARE of the device's memory,
# so that a large GPU keeps even a big conv layer's columns in one chunk (each extra chunk redoes
# im2col in the backward pass and adds a short, inefficient tail GEMM). CPUs: COL_CACHE_SHARE of
# the cache the driver reports in front of memory (the last-level cache), so that the GEMM reads
# the columns im2col has just written from the cache, not from memory; COL_BUDGET_BYTES["cpu"]
# where none is reported.
COL_BUDGET_BYTES = {"cpu": 8 << 20, "gpu": 512 << 20}
COL_BUDGET_SHARE = 1 / 32
COL_CACHE_SHARE = 1 / 4


class Lazy:
    """A kernel built on its first call (input gradients: the first layer never needs them,
    and nothing should compile for it)."""

    def __init__(self, make):
        self.make, self.op = make, None

    def __call__(self, *args, **kwargs):
        if self.op is None:
            self.op = self.make()
        return self.op(*args, **kwargs)


def column_budget(device):
    """The bytes a conv layer's column buffer may take on the device (COL_BUDGET_BYTES)."""
    profile = device.profile
    if device.features["simt"]:
        budget = max(COL_BUDGET_BYTES["gpu"], int(profile["global_mem_bytes"] * COL_BUDGET_SHARE))
    else:
        cache = profile.get("global_mem_cache_bytes", 0)
        budget = int(cache * COL_CACHE_SHARE) if cache else COL_BUDGET_BYTES["cpu"]
    return min(budget, profile["max_alloc_bytes"] // 2)


class DenseOp:
    def __init__(self, device, n, fin, fout, act):
        # x [n,fin] @ W^T; a deep, narrow product (e.g. 8192 -> 256) is split along K so that
        # it fills a GPU (16 tiles of 64x64 would leave most of a large GPU's compute units idle)
        self.fwd = SplitKGemm(device, n, fout, fin, True, fin, fin) \
            if fin >= 8 * max(n, fout) else Gemm(device, n, fout, fin, trans_b=True)
        self.bias_act = BiasAct(device, n, fout, 1, act, "nfs", bias=True)
        self.act_bwd = ActBwd(device, n, fout, 1, act, "nfs") if act != "none" else None
        self.dz = empty(device, (n, fout)) if act != "none" else None
        self.bias_grad = BiasGrad(device, n, fout, 1, "nfs")
        self.dw = Gemm(device, fout, fin, n, trans_a=True)           # dz^T [fout,n] @ x
        # dz [n,fout] @ W, built on first use: the first layer never needs it
        self.dx = Lazy(lambda: Gemm(device, n, fin, fout))

    def forward(self, xs, y, p):
        self.fwd(xs[0], p["weight"], y)
        self.bias_act(y, p["bias"], y)

    def backward(self, xs, y, dy, dxs, p, g):
        dz = dy
        if self.act_bwd is not None:
            self.act_bwd(y, dy, self.dz)
            dz = self.dz
        self.bias_grad(dz, g["bias"])
        self.dw(dz, xs[0], g["weight"])
        if dxs[0] is not None:
            self.dx(dz, p["weight"], dxs[0])


class ConvOp:
    def __init__(self, device, n, in_chw, f, kernel, stride, pad, act, bias=True):
        c, h, w = in_chw
        oh = (h + 2 * pad[0] - kernel[0]) // stride[0] + 1
        ow = (w + 2 * pad[1] - kernel[1]) // stride[1] + 1
        self.n, self.chw, self.f, self.s = n, c * h * w, f, oh * ow
        ckk = c * kernel[0] * kernel[1]
        chunk = int(max(1, min(n, column_budget(device) // (4 * ckk * self.s))))
        self.chunks = [(n0, min(chunk, n - n0)) for n0 in range(0, n, chunk)]
        sizes = sorted({nc for _, nc in self.chunks})
        geo = (in_chw, kernel, stride, pad)
        self.im2col = {nc: Im2Col(device, *geo, nc) for nc in sizes}
        self.col = empty(device, (ckk, chunk * self.s))
        self.col_holds_x = False  # one chunk: the forward's columns serve the backward too
        # z [F, n*S] ("fns"): the backward's dz.
        self.z = empty(device, (f, n * self.s))
        ns = n * self.s
        # Forward, per chunk: y[chunk] = act(W (F x CKK) @ col (CKK x nc*S) + b), NCHW
        self.fwd = {nc: Gemm(device, f, nc * self.s, ckk, epilogue=(act, self.s))
                    for nc in sizes}
        self.act_bwd = ActBwd(device, n, f, self.s, act, "fns")
        self.bias_grad = BiasGrad(device, n, f, self.s, "fns") if bias else None
        # without a bias of its own, the epilogue adds zeros (one GEMM variant for both)
        self.zeros = None if bias else empty(device, (f,)).fill(0.0)
        # dW (F x CKK) [+]= dz[:, chunk] (F x nc*S) @ col^T
        self.dw = {nc: SplitKGemm(device, f, ckk, nc * self.s, True, ns, nc * self.s)
                   for nc in sizes}
        self.dx = ConvBackwardData(device, n, in_chw, f, kernel, stride, pad, (oh, ow), sizes, ns)

    def forward(self, xs, y, p):
        for n0, nc in self.chunks:
            self.im2col[nc](xs[0], self.col, x_off=n0 * self.chw)
            self.fwd[nc](p["weight"], self.col, y, c_off=n0 * self.f * self.s,
                         bias=p.get("bias", self.zeros))
        self.col_holds_x = len(self.chunks) == 1

    def backward(self, xs, y, dy, dxs, p, g):
        dz = self.z
        self.act_bwd(y, dy, dz)
        if self.bias_grad is not None:
            self.bias_grad(dz, g["bias"])
        for i, (n0, nc) in enumerate(self.chunks):
            if not self.col_holds_x:
                self.im2col[nc](xs[0], self.col, x_off=n0 * self.chw)
            self.dw[nc](dz, self.col, g["weight"], a_off=n0 * self.s, accumulate=i > 0)
            if dxs[0] is not None:  # the column buffer is free again: reuse it for dx's
                self.dx(p["weight"], dz, dxs[0], self.col, n0, nc)
        self.col_holds_x = False


class MaxPoolOp:
    def __init__(self, device, n, in_chw, size, stride):
        shape = (n,) + tuple(in_chw)
        self.fwd = MaxPoolFwd(device, shape, size, stride)
        self.bwd = MaxPoolBwd(device, shape, size, stride)
        self.argmax = empty(device, self.fwd.out_shape, np.int32)

    def forward(self, xs, y, p):
        self.fwd(xs[0], y, self.argmax)

    def backward(self, xs, y, dy, dxs, p, g):
        if dxs[0] is not None:
            self.bwd(dy, self.argmax, dxs[0])


class AvgPoolOp:
    """Average pooling (AvgPool2D; GlobalAvgPool is the window of the whole image)."""

    def __init__(self, device, n, in_chw, size, stride):
        shape = (n,) + tuple(in_chw)
        self.fwd = AvgPoolFwd(device, shape, size, stride)
        self.bwd = AvgPoolBwd(device, shape, size, stride)

    def forward(self, xs, y, p):
        self.fwd(xs[0], y)

    def backward(self, xs, y, dy, dxs, p, g):
        if dxs[0] is not None:
            self.bwd(dy, dxs[0])


class ActivationOp:
    """A ReLU or Sigmoid that could not be fused into the layer before it."""

    def __init__(self, device, n, size, act):
        self.fwd = BiasAct(device, n, size, 1, act, "nfs", bias=False)
        self.bwd = ActBwd(device, n, size, 1, act, "nfs")

    def forward(self, xs, y, p):
        self.fwd(xs[0], None, y)

    def backward(self, xs, y, dy, dxs, p, g):
        if dxs[0] is not None:
            self.bwd(y, dy, dxs[0])


class AddOp:
    def __init__(self, device, size, inputs):
        self.axpby = Axpby(device, size)
        self.inputs = inputs

    def forward(self, xs, y, p):
        self.axpby(xs[0], y, 1.0, 0.0)
        for x in xs[1:]:
            self.axpby(x, y, 1.0, 1.0)

    def backward(self, xs, y, dy, dxs, p, g):
        for dx in dxs:
            if dx is not None:
                self.axpby(dy, dx, 1.0, 0.0)


class BatchNormOp:
    """Batch norm (model/batchnorm.py) over x [n, c, s], with a following activation fused.
    Training, one device: one kernel sums each channel and finalises its statistics, one
    normalises. Several devices (step.sums): the channel sums are yielded to be all-reduced
    across them between the two, then finalised with the whole batch's count on each; the
    backward pass likewise. Evaluation: the running statistics' scale and shift, then the
    same normalising kernel."""

    def __init__(self, device, n, c, s, act, eps, momentum):
        self.s = s
        self.fused_sums = Lazy(lambda: BnSums(device, n, c, s, True, eps, momentum))
        self.sums = Lazy(lambda: BnSums(device, n, c, s, False, eps, momentum))
        self.finalize = Lazy(lambda: BnFinalize(device, c, eps, momentum))
        self.eval_coef = Lazy(lambda: BnEvalCoef(device, c, eps))
        self.apply = BnApply(device, n, c, s, act)
        self.bwd_sums = BnBwdSums(device, n, c, s, act)
        self.bwd_dx = Lazy(lambda: BnBwdDx(device, n, c, s, act))
        # per channel, [2, c]: the sums; (mean, 1/std); (scale, shift) of the normalisation
        self.totals, self.saved, self.coef = (empty(device, (2, c)) for _ in range(3))

    def forward(self, xs, y, p, step):
        stats = (p["weight"], p["bias"], p["running_mean"], p["running_var"], self.saved,
                 self.coef)
        if step is None:
            self.eval_coef(*stats[:4], self.coef)
        elif step.sums is None:
            self.fused_sums(xs[0], self.totals, *stats, float(step.global_n * self.s))
        else:
            self.sums(xs[0], self.totals)
            yield self.totals
            self.finalize(self.totals, *stats, float(step.global_n * self.s))
        self.apply(xs[0], self.coef, y)

    def backward(self, xs, y, dy, dxs, p, g, step):
        self.bwd_sums(xs[0], y, dy, self.saved, self.totals, g["weight"], g["bias"])
        if dxs[0] is None:
            return
        if step.sums is not None:
            yield self.totals
        self.bwd_dx(xs[0], y, dy, self.saved, self.coef, self.totals, dxs[0],
                    float(step.global_n * self.s))


class DropoutOp:
    """Dropout (model/layers.py) over [n, features]; evaluation copies x."""

    def __init__(self, device, n, features, p, key):
        self.fwd = DropoutFwd(device, n, features, p)
        self.bwd = DropoutBwd(device, n, features, p)
        self.copy = Axpby(device, n * features)
        self.key = key

    def forward(self, xs, y, p, step):
        if step is None:
            self.copy(xs[0], y, 1.0, 0.0)
        else:
            self.fwd(xs[0], y, *self._counter(step))
        return ()

    def backward(self, xs, y, dy, dxs, p, g, step):
        if dxs[0] is not None:
            self.bwd(dy, dxs[0], *self._counter(step))
        return ()

    def _counter(self, step):
        """(seed_lo, seed_hi, step, offset) of the mask's generator (kernels/dropout.cl.mako)."""
        return (*philox_key(step.seed, self.key), step.step & WORD, step.offset)
