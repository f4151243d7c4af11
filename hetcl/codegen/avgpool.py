"""Host side of kernels/avgpool.cl.mako: average pooling forward and backward (a global average
pool is the window of the whole image). Shapes are compile-time constants of the generated
program; each object builds once in its constructor, ``__call__`` only enqueues. Layouts are
documented in the template header."""
import dataclasses

import numpy as np

from .launch import Launch, choose, round_up
from .params import KernelParams
from .pool import pool_shape


@dataclasses.dataclass(frozen=True)
class AvgPoolParams(KernelParams):
    """See the header of kernels/avgpool.cl.mako: WG work-items per group, WPT items per
    work-item."""
    WG: int = 64
    WPT: int = 1

    template = "avgpool.cl.mako"
    LOCAL = ("WG",)
    GRIDS = ({"WG": (16, 32, 64, 128, 256), "WPT": (1, 2, 4, 8)},)

    def global_size(self, items):
        return (round_up(-(-items // self.WPT), self.WG),)

    @classmethod
    def defaults(cls, features):
        # GPU: one item per work-item, several warps per group; CPU: PoCL's work-group
        # vectoriser takes 16 neighbouring items at a time.
        return cls(WG=128, WPT=1) if features["simt"] else cls(WG=16, WPT=1)


class _AvgPool:
    kernel = None   # "avgpool_fwd" / "avgpool_bwd"

    def __init__(self, device, in_nchw, size_hw, stride_hw, params=None):
        self.in_shape, self.out_shape, geometry, bucket = pool_shape(in_nchw, size_hw, stride_hw)
        n, c, h, w = self.in_shape
        kh, kw, sh, sw = geometry
        params = params or choose(device, AvgPoolParams, self.kernel, bucket,
                                  AvgPoolParams.defaults(device.features))
        items = int(np.prod(self.out_shape if self.kernel == "avgpool_fwd" else self.in_shape,
                            dtype=np.int64))
        self._launch = Launch(device, params, self.kernel, [None, None],
                              lambda p: p.global_size(items), tune=(self.kernel, bucket, None),
                              kernel=self.kernel, images=n, c=c, h=h, w=w, kh=kh, kw=kw,
                              sh=sh, sw=sw)
        self.params = self._launch.params


class AvgPoolFwd(_AvgPool):
    """y[N,C,OH,OW] = the mean of each window of x[N,C,H,W]."""
    kernel = "avgpool_fwd"

    def __call__(self, x, y, wait_for=None):
        return self._launch(x, y, wait_for=wait_for)


class AvgPoolBwd(_AvgPool):
    """dx (overwritten) = for each pixel, the sum of dy over its windows / the window's size."""
    kernel = "avgpool_bwd"

    def __call__(self, dy, dx, wait_for=None):
        return self._launch(dy, dx, wait_for=wait_for)
