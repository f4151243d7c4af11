"""Host side of kernels/pool.cl.mako: max pooling forward (values + argmax) and backward.

Shapes are compile-time constants of the generated program; each object builds once in its
constructor, ``__call__`` only enqueues. Layouts are documented in the template header.
"""
import dataclasses

import numpy as np

from ..tuning.buckets import shape_bucket
from .launch import Launch, choose, round_up
from .params import KernelParams


@dataclasses.dataclass(frozen=True)
class PoolParams(KernelParams):
    """See the header of kernels/pool.cl.mako: WG work-items per group, WPT items per
    work-item, PLANES 0/1 the work decomposition (per element / per (image, channel) plane)."""
    WG: int = 64
    WPT: int = 1
    PLANES: int = 0

    template = "pool.cl.mako"
    LOCAL = ("WG",)
    CHOICES = {"PLANES": (0, 1)}
    GRIDS = ({"WG": (16, 32, 64, 128, 256), "WPT": (1, 2, 4, 8), "PLANES": (0,)},
             {"WG": (1, 4, 16), "WPT": (1, 2, 4), "PLANES": (1,)})

    def global_size(self, items):
        return (round_up(-(-items // self.WPT), self.WG),)

    @classmethod
    def defaults(cls, features):
        if features["simt"]:
            # GPU: one item per work-item for the most parallelism, several warps per group.
            return cls(WG=128, WPT=1)
        # CPU: one work-item per plane: faster in both passes, most in the backward, than one
        # element per work-item with WG=256 (docs/benchmarks.md, 'Layers').
        return cls(WG=4, WPT=1, PLANES=1)


def pool_shape(in_nchw, size_hw, stride_hw):
    """A pooling layer's shapes, checked: (input NCHW, output NCHW, (kh, kw, sh, sw), its
    tuning bucket). Windows lie wholly inside the image (no padding)."""
    in_shape = tuple(int(v) for v in in_nchw)
    n, c, h, w = in_shape
    kh, kw = (int(v) for v in size_hw)
    sh, sw = (int(v) for v in stride_hw)
    if min(n, c, h, w, kh, kw, sh, sw) < 1 or kh > h or kw > w:
        raise ValueError(f"bad pooling shape: input {in_nchw}, window {size_hw}, "
                         f"stride {stride_hw}")
    out_shape = (n, c, (h - kh) // sh + 1, (w - kw) // sw + 1)
    return in_shape, out_shape, (kh, kw, sh, sw), \
        shape_bucket(n, f"{c}x{h}x{w} k{kh}x{kw} s{sh}x{sw}")


class _MaxPool:
    kernel = None   # "maxpool_fwd" / "maxpool_bwd"

    def __init__(self, device, in_nchw, size_hw, stride_hw, params=None):
        self.device = device
        self.in_shape, self.out_shape, geometry, bucket = pool_shape(in_nchw, size_hw, stride_hw)
        n, c, h, w = self.in_shape
        kh, kw, sh, sw = geometry
        self.params = params or choose(device, PoolParams, self.kernel, bucket,
                                       PoolParams.defaults(device.features))
        elements = int(np.prod(self.out_shape if self.kernel == "maxpool_fwd"
                               else self.in_shape, dtype=np.int64))
        self._launch = Launch(
            device, self.params, self.kernel, [None, None, None],
            lambda p: p.global_size(n * c if p.PLANES else elements),
            tune=(self.kernel, bucket, None),
            kernel=self.kernel, images=n, c=c, h=h, w=w, kh=kh, kw=kw, sh=sh, sw=sw)
        self.params = self._launch.params


class MaxPoolFwd(_MaxPool):
    """y[N,C,OH,OW] = max over each window; argmax (int32) = flat h*W + w of the maximum."""
    kernel = "maxpool_fwd"

    def __call__(self, x, y, argmax, wait_for=None):
        return self._launch(x, y, argmax, wait_for=wait_for)


class MaxPoolBwd(_MaxPool):
    """dx (overwritten) = sum of dy over the windows whose argmax is that pixel."""
    kernel = "maxpool_bwd"

    def __call__(self, dy, argmax, dx, wait_for=None):
        return self._launch(dy, argmax, dx, wait_for=wait_for)
