"""Host side of kernels/dropout.cl.mako: inverted dropout forward and backward, its mask drawn
on the device from Philox4x32-10 keyed by (seed_lo, seed_hi) and counted by (the element's
index in the whole batch, the step), so the backward pass draws the forward's mask again and a
resumed run or any split of the batch draws the same one (probes/dropout.py: the mask in numpy).

Shapes: n rows of this device's shard, f elements per row, p the drop probability (all
compile-time); seed_lo, seed_hi, step and offset (the shard's first row in the whole batch) are
uint arguments of each call. Each class builds once in its constructor; ``__call__`` only
enqueues and returns the event. Layouts are documented in the template header.
"""
import dataclasses

import numpy as np

from ..tuning.buckets import shape_bucket
from .launch import Launch, choose, round_up
from .params import VECTOR_WIDTHS, KernelParams, vector_width

ARG_TYPES = [None, None, np.uint32, np.uint32, np.uint32, np.uint32]
WORD = 0xFFFFFFFF  # a uint kernel argument: the low 32 bits of a Python int


def philox_key(seed, stream):
    """(seed_lo, seed_hi), the Philox key of one stream of a run's random draws: the low 32 bits
    of the run's seed and of the stream's number (a dropout layer's key; the gather kernel's
    augmentation has its own, gather.AUGMENT_STREAM). Streams of different numbers have
    different keys, so their draws are independent whatever their counters."""
    return int(seed) & WORD, int(stream) & WORD


@dataclasses.dataclass(frozen=True)
class DropoutParams(KernelParams):
    """See the header of kernels/dropout.cl.mako: WG work-items per group, VW Philox blocks per
    work-item (4*VW consecutive elements), computed together as one uintVW vector."""
    WG: int = 64
    VW: int = 1

    template = "dropout.cl.mako"
    LOCAL = ("WG",)
    CHOICES = {"VW": VECTOR_WIDTHS}
    GRIDS = ({"WG": (16, 32, 64, 128, 256), "VW": VECTOR_WIDTHS},)

    def global_size(self, total):
        blocks = -(-(int(total) + 3) // 4)  # the most Philox blocks a shard's elements span
        return (round_up(-(-blocks // self.VW), self.WG),)

    @classmethod
    def defaults(cls, features):
        # GPU: one Philox block (4 elements) per work-item, 256-wide groups: the most work-items
        # in flight, neighbouring items on neighbouring 16 bytes. CPU: PoCL leaves the
        # work-items' Philox rounds scalar; explicit vectors of blocks make its 64-bit products
        # vector multiplies.
        if features["simt"]:
            return cls(WG=256, VW=1)
        return cls(WG=16, VW=8).capped(vector_width(features))


def _check(n, f, p):
    n, f, p = int(n), int(f), float(p)
    if n < 1 or f < 1:
        raise ValueError(f"dropout shape n={n}, f={f}: both must be >= 1")
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout p={p}: needs 0 <= p < 1")
    return n, f, p


class _Dropout:
    kernel = None   # "dropout_fwd" / "dropout_bwd"

    def __init__(self, device, n, features, p, params=None):
        self.n, self.features, self.p = _check(n, features, p)
        bucket = shape_bucket(self.n, f"{self.features}")
        params = params or choose(device, DropoutParams, self.kernel, bucket,
                                  DropoutParams.defaults(device.features))
        total = self.n * self.features
        self._launch = Launch(device, params, self.kernel, ARG_TYPES,
                              lambda q: q.global_size(total), tune=(self.kernel, bucket, None),
                              kernel=self.kernel, n=self.n, f=self.features, p=self.p)
        self.params = self._launch.params


class DropoutFwd(_Dropout):
    """y[n, features] = x * keep / (1 - p); y may be x (in place)."""
    kernel = "dropout_fwd"

    def __call__(self, x, y, seed_lo, seed_hi, step, offset, wait_for=None):
        return self._launch(x, y, seed_lo, seed_hi, step, offset, wait_for=wait_for)


class DropoutBwd(_Dropout):
    """dx[n, features] = dy * keep / (1 - p), keep the forward's mask for the same seed_lo,
    seed_hi, step and offset; dx may be dy (in place)."""
    kernel = "dropout_bwd"

    def __call__(self, dy, dx, seed_lo, seed_hi, step, offset, wait_for=None):
        return self._launch(dy, dx, seed_lo, seed_hi, step, offset, wait_for=wait_for)
