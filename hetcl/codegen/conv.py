"""Host side of kernels/conv2d.cl.mako: im2col / col2im for convolution as GEMM.

A Conv2D layer runs, per chunk of images:
  forward      col = im2col(x);   Y[F, images*OH*OW] = W[F, C*KH*KW] @ col
  backward     dW += dY @ col^T;  dcol = W^T @ dY;  dx = col2im(dcol)
The col layout is documented in the template header. Shapes are compile-time constants of the
generated program; each object builds once in its constructor, ``__call__`` only enqueues.
"""
import dataclasses

import numpy as np

from ..tuning.buckets import shape_bucket
from .launch import Launch, choose, round_up
from .params import KernelParams


def conv_out_hw(in_hw, kernel_hw, stride_hw, pad_hw):
    """(OH, OW) of a convolution; ValueError if the kernel does not fit the padded image."""
    out = tuple((size + 2 * p - k) // s + 1
                for size, k, s, p in zip(in_hw, kernel_hw, stride_hw, pad_hw))
    if min(out) < 1:
        raise ValueError(f"kernel {tuple(kernel_hw)} does not fit input {tuple(in_hw)} padded "
                         f"by {tuple(pad_hw)}")
    return out


@dataclasses.dataclass(frozen=True)
class _ConvDataParams(KernelParams):
    """See the header of kernels/conv2d.cl.mako: WG work-items per group, WPT items (columns or
    pixels; planes with PLANES=1) per work-item, CPT channels per work-item, PLANES 0/1 the work
    decomposition (per column or pixel / per (channel, image) plane)."""
    WG: int = 64
    WPT: int = 1
    CPT: int = 1
    PLANES: int = 0

    template = "conv2d.cl.mako"
    LOCAL = ("WG", 1)
    CHOICES = {"PLANES": (0, 1)}
    GRIDS = ({"WG": (16, 32, 64, 128, 256), "WPT": (1, 2, 4, 8), "CPT": (1, 2, 4),
              "PLANES": (0,)},
             {"WG": (1, 4, 16, 64), "WPT": (1, 2, 4, 8), "CPT": (1,), "PLANES": (1,)})

    def rules(self):
        yield not self.PLANES or self.CPT == 1, "PLANES=1 takes CPT=1 (a task is one channel plane)"

    def global_size(self, items, channels):
        return (round_up(-(-items // self.WPT), self.WG), -(-channels // self.CPT))

    @classmethod
    def defaults(cls, features):
        if features["simt"]:
            # GPU: one column (im2col) or pixel (col2im) per work-item for the most
            # parallelism; 128-wide groups give the scheduler several warps per group.
            return cls(WG=128, WPT=1, CPT=1)
        # CPU: one work-item per (channel, image) plane copying contiguous runs; one-item groups
        # leave PoCL's work-group vectoriser nothing to do, LLVM vectorises each run. Several
        # times faster than the per-column/pixel forms on PoCL (docs/benchmarks.md, 'Layers').
        return cls(WG=1, WPT=1, CPT=1, PLANES=1)


@dataclasses.dataclass(frozen=True)
class Im2ColParams(_ConvDataParams):
    """Parameters of im2col (defaults and space shared with col2im: see the base class)."""


@dataclasses.dataclass(frozen=True)
class Col2ImParams(_ConvDataParams):
    """Parameters of col2im (a distinct class, so the two never share a cache entry)."""


class _ConvData:
    kernel = None       # "im2col" / "col2im"
    params_cls = None

    def __init__(self, device, in_chw, kernel_hw, stride_hw, pad_hw, images, params=None,
                 planes=None):
        """planes: (img_stride, chan_stride) where the input's plane (n, ch) starts
        (im2col only; default NCHW)."""
        self.device = device
        self.c, self.h, self.w = (int(v) for v in in_chw)
        self.kh, self.kw = (int(v) for v in kernel_hw)
        self.sh, self.sw = (int(v) for v in stride_hw)
        self.ph, self.pw = (int(v) for v in pad_hw)
        self.images = int(images)
        if min(self.c, self.h, self.w, self.kh, self.kw, self.sh, self.sw, self.images) < 1 \
                or min(self.ph, self.pw) < 0:
            raise ValueError(f"bad conv shape: in {in_chw}, kernel {kernel_hw}, stride "
                             f"{stride_hw}, pad {pad_hw}, images {images}")
        self.out_hw = conv_out_hw((self.h, self.w), kernel_hw, stride_hw, pad_hw)
        self.rows = self.c * self.kh * self.kw
        self.cols = self.images * self.out_hw[0] * self.out_hw[1]
        shape = f"{self.c}x{self.h}x{self.w} k{self.kh}x{self.kw} s{self.sh}x{self.sw} " \
                f"p{self.ph}x{self.pw}"
        layout = {}
        if planes is not None:
            layout = {"img_stride": int(planes[0]), "chan_stride": int(planes[1])}
            shape += f" planes{layout['img_stride']}x{layout['chan_stride']}"
        bucket = shape_bucket(self.images, shape)
        self.params = params or choose(device, self.params_cls, self.kernel, bucket,
                                       self.params_cls.defaults(device.features))
        self._launch = Launch(
            device, self.params, self.kernel, self._arg_types, self._global_size, tune=(self.kernel, bucket, None),
            kernel=self.kernel, c=self.c, h=self.h, w=self.w, kh=self.kh, kw=self.kw,
            sh=self.sh, sw=self.sw, ph=self.ph, pw=self.pw, images=self.images, **layout)
        self.params = self._launch.params

    def _global_size(self, params):
        if params.PLANES:  # one task per (channel, image) plane
            return params.global_size(self.images * self.c, 1)
        items = self.cols if self.kernel == "im2col" else self.images * self.h * self.w
        return params.global_size(items, self.c)


class Im2Col(_ConvData):
    """col[C*KH*KW, images*OH*OW] <- the receptive fields of ``images`` NCHW images."""
    kernel = "im2col"
    params_cls = Im2ColParams
    _arg_types = [None, np.int64, None]

    def __call__(self, x, col, x_off=0, wait_for=None):
        """x: float32 NCHW buffer, the chunk starting at element x_off; col: [rows, cols]."""
        return self._launch(x, int(x_off), col, wait_for=wait_for)


class Col2Im(_ConvData):
    """dx (overwritten) <- the adjoint of im2col: each pixel sums the col entries taken from
    it."""
    kernel = "col2im"
    params_cls = Col2ImParams
    _arg_types = [None, None, np.int64]

    def __call__(self, col, dx, dx_off=0, wait_for=None):
        """col: [rows, cols]; dx: float32 NCHW buffer, the chunk starting at element dx_off."""
        return self._launch(col, dx, int(dx_off), wait_for=wait_for)


class WeightFlip:
    """Wt[C, F*KH*KW] <- W[F, C, KH, KW] with each filter's taps reversed: the weights of the
    stride-1 convolution of dY that gives dX (ops.ConvOp's backward-data pass)."""

    def __init__(self, device, f, c, kernel_hw, params=None):
        """params: only WG matters (one element a work-item); default 64 on GPUs, else 1."""
        kh, kw = (int(v) for v in kernel_hw)
        params = params or Im2ColParams(WG=64 if device.features["simt"] else 1)
        self._launch = Launch(device, params, "wflip", [None, None],
                              lambda p: (round_up(f * c * kh * kw, p.WG), 1),
                              kernel="wflip", c=int(f), h=int(c), w=kw, kh=kh, kw=kw, sh=1,
                              sw=1, ph=0, pw=0, images=1)

    def __call__(self, w, wt, wait_for=None):
        return self._launch(w, wt, wait_for=wait_for)
