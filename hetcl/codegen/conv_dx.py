"""A convolution's backward-data pass (dx from dz), two ways, chosen per device and layer shape
by the tuning DB ("conv_dx" entries, found and timed by `hetcl tune` like any kernel).

BY_CONV = 0 (the default): dcol = W^T @ dz, then col2im sums each pixel's column entries.
BY_CONV = 1 (stride-1 convolutions only): dx is itself a convolution - of dz, zero-padded by
  K-1-pad, with each filter's taps reversed and filters and channels swapped (WeightFlip:
  Wt[C, F*KH*KW]) - so im2col of dz and a GEMM whose epilogue stores NCHW give dx. It writes
  F*KH*KW column rows where the first way writes and re-reads C*KH*KW, and its GEMM has the
  forward GEMM's shape. Which is faster depends on the device and the layer: on a 2-core
  PoCL CPU cifar-cnn's 64->64 conv was slower this way and its 128->128 conv a little faster;
  on a GPU, timed in the training step (the tuner's choice), both were faster
  (docs/benchmarks.md, 'Tuning').

Layouts: dz is [F, N*OH*OW] ("fns", row length ldz), dx NCHW; the column buffer is the conv's
own, [C*KH*KW, chunk*OH*OW] floats, reused (BY_CONV = 1 is offered only where its
[F*KH*KW, chunk*H*W] columns fit in it).
"""
import dataclasses

from ..backend.buffers import empty
from ..tuning.buckets import shape_bucket
from .conv import Col2Im, Im2Col, WeightFlip
from .gemm import Gemm
from .launch import attribute, choose
from .params import KernelParams


@dataclasses.dataclass(frozen=True)
class ConvDxParams(KernelParams):
    """BY_CONV: 0 dcol GEMM + col2im; 1 flipped weights, im2col of dz and a GEMM."""
    BY_CONV: int = 0

    # launches no kernel itself: no template, no work-group (LOCAL)
    CHOICES = {"BY_CONV": (0, 1)}
    GRIDS = ({"BY_CONV": (0, 1)},)

    @classmethod
    def defaults(cls, features):
        return cls(0)


def by_conv_fits(in_chw, f, kernel, stride, pad, out_hw):
    """Whether BY_CONV = 1 can run: stride 1, padding below the kernel, and its columns fit
    the conv's column buffer."""
    c, h, w = in_chw
    return tuple(stride) == (1, 1) and all(p <= k - 1 for p, k in zip(pad, kernel)) and \
        f * h * w <= c * out_hw[0] * out_hw[1]


class ConvBackwardData:
    """dx of one conv layer, chunk by chunk. Built on first call (the first layer never needs
    dx); its launches are recorded once more under this object (launch.attribute), so the
    in-step tuner times the whole pass as the "conv_dx" entry."""

    def __init__(self, device, n, in_chw, f, kernel, stride, pad, out_hw, chunk_sizes, ldz):
        self.device, self.in_chw, self.f = device, tuple(in_chw), int(f)
        self.geo = (tuple(in_chw), tuple(kernel), tuple(stride), tuple(pad))
        self.out_hw, self.ldz = tuple(out_hw), int(ldz)
        c, h, w = in_chw
        bucket = shape_bucket(n, f"{c}x{h}x{w} f{f} k{kernel[0]}x{kernel[1]} "
                                 f"s{stride[0]}x{stride[1]} p{pad[0]}x{pad[1]}")
        fits = by_conv_fits(in_chw, f, kernel, stride, pad, out_hw)
        self.params = choose(device, ConvDxParams, "conv_dx", bucket,
                             ConvDxParams.defaults(device.features)) if fits else ConvDxParams(0)
        self.tune = ("conv_dx", bucket, lambda: ConvDxParams.space(device.features)) \
            if fits else None
        self.sizes = tuple(chunk_sizes)
        self.ops = None

    def _build(self):
        (c, h, w), kernel, stride, pad = self.geo
        s = self.out_hw[0] * self.out_hw[1]
        if not self.params.BY_CONV:
            self.ops = {nc: (Gemm(self.device, c * kernel[0] * kernel[1], nc * s, self.f,
                                  trans_a=True, ldb=self.ldz),
                             Col2Im(self.device, *self.geo, nc)) for nc in self.sizes}
            return
        fkk = self.f * kernel[0] * kernel[1]
        flipped = ((self.f,) + self.out_hw, kernel, (1, 1),
                   (kernel[0] - 1 - pad[0], kernel[1] - 1 - pad[1]))
        self.flip = WeightFlip(self.device, self.f, c, kernel)
        self.wt = empty(self.device, (c, fkk))
        self.zero_bias = empty(self.device, (c,)).fill(0.0)  # the epilogue adds a bias
        self.ops = {nc: (Im2Col(self.device, *flipped, nc, planes=(s, self.ldz)),
                         Gemm(self.device, c, nc * h * w, fkk, epilogue=("none", h * w)))
                    for nc in self.sizes}

    def __call__(self, weight, dz, dx, col, n0, nc):
        """dx[n0:n0+nc] (NCHW, overwritten) from dz's columns of those images; col: the conv's
        column buffer (free at this point of its backward pass)."""
        if self.ops is None:
            self._build()
        c, h, w = self.in_chw
        s = self.out_hw[0] * self.out_hw[1]
        first, second = self.ops[nc]
        if not self.params.BY_CONV:
            events = [first(weight, dz, col, b_off=n0 * s),
                      second(col, dx, dx_off=n0 * c * h * w)]
            return attribute(self, events)
        events = [self.flip(weight, self.wt)] if n0 == 0 else []  # once a step, chunk 0 first
        events.append(first(dz, col, x_off=n0 * s))
        events.append(second(self.wt, col, dx, c_off=n0 * c * h * w, bias=self.zero_bias))
        return attribute(self, events)
