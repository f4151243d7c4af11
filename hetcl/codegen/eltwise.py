"""Host side of kernels/eltwise.cl.mako: fused bias + activation, activation backward (with the
fns -> nfs transposition a conv needs) and the deterministic bias gradient.

Shapes: n batch rows, f features / channels, s spatial size H*W (1 for dense). Layouts:
"nfs" = [n][f][s] (NCHW; [N, F] for dense) and "fns" = [f][n][s] (a conv GEMM's output).
Each class builds its kernel once in the constructor; ``__call__`` only enqueues and returns
the event.
"""
import dataclasses

from ..tuning.buckets import shape_bucket
from .launch import Launch, choose
from .params import FLOAT_BYTES, INT_MAX, VECTOR_WIDTHS, KernelParams, vector_width

ACTIVATIONS = ("none", "relu", "sigmoid")
LAYOUTS = ("nfs", "fns")


@dataclasses.dataclass(frozen=True)
class EltwiseParams(KernelParams):
    """Flat element-wise kernels (bias_act, act_bwd; update.cl.mako reuses it). See the header
    of kernels/eltwise.cl.mako: WGS work-items per group, WPT vectors per work-item, VW floats
    per vector."""
    WGS: int = 64
    WPT: int = 1
    VW: int = 1

    template = "eltwise.cl.mako"
    LOCAL = ("WGS",)
    CHOICES = {"VW": VECTOR_WIDTHS}
    GRIDS = ({"WGS": (16, 32, 64, 128, 256), "WPT": (1, 2, 4, 8), "VW": VECTOR_WIDTHS},)

    def rules(self):
        yield self.WPT * self.VW <= 64, "more than 64 elements per work-item"

    def elements_per_group(self):
        return self.WGS * self.WPT * self.VW

    def global_size(self, total):
        return (max(1, -(-int(total) // self.elements_per_group())) * self.WGS,)

    @classmethod
    def defaults(cls, features):
        if features["simt"]:
            # GPU: a float4 per work-item, 256-wide groups: 16-byte coalesced transactions
            # (faster than scalars, far faster than float16: docs/benchmarks.md, 'Layers').
            return cls(WGS=256, WPT=1, VW=4)
        # CPU: explicit float16 vectors: VW=1, left to PoCL's own vectorisation across
        # work-items, is much slower (docs/benchmarks.md, 'Layers').
        return cls(WGS=64, WPT=1, VW=16).capped(vector_width(features))


@dataclasses.dataclass(frozen=True)
class BiasGradParams(KernelParams):
    """bias_grad: FPG features per work-group, WGS work-items per feature (a power of two, the
    width of the local-memory reduction tree), VW elements per step (independent Kahan lanes),
    BLOCKED contiguous blocks (1) or interleaved units (0) per work-item. See the header of
    kernels/eltwise.cl.mako."""
    WGS: int = 64
    FPG: int = 1
    VW: int = 1
    BLOCKED: int = 1

    template = "eltwise.cl.mako"
    LOCAL = ("FPG", "WGS")
    CHOICES = {"VW": VECTOR_WIDTHS, "BLOCKED": (0, 1)}
    POWERS_OF_TWO = ("WGS",)
    GRIDS = ({"WGS": (1, 4, 16, 64, 256), "FPG": (1, 2, 4, 8, 16, 32), "VW": (1, 4, 8, 16),
              "BLOCKED": (0, 1)},)

    def local_mem_bytes(self):
        return FLOAT_BYTES * self.WGS * self.FPG

    def global_size(self, f):
        return (-(-int(f) // self.FPG) * self.FPG, self.WGS)

    @classmethod
    def defaults(cls, features):
        if features["simt"]:
            # GPU: 256 work-items per feature reading interleaved (coalesced) elements (the
            # "nfs" layout alone prefers VW=4: docs/benchmarks.md, 'Layers').
            return cls(WGS=256, FPG=1, VW=1, BLOCKED=0)
        # CPU: a few work-items per feature, each streaming through a contiguous block with
        # 16 Kahan lanes (one lane is many times slower: docs/benchmarks.md, 'Layers').
        return cls(WGS=16, FPG=1, VW=16, BLOCKED=1).capped(vector_width(features))

    @classmethod
    def for_shape(cls, features, n, f, s, layout):
        """The default for one shape. GPUs need many loads in flight to reach their memory
        bandwidth, and the generic default (one 256-item group per feature) gives them too few
        where features are few and long (a conv's bias over N*S = 65536: 128 groups) or many
        and short (a split-K GEMM's sum of P partial results: 147456 features of 117 terms,
        one group of 256 items each, most of them idle). With the generic default these two
        kinds took a large share of a GPU's cifar-cnn step (docs/benchmarks.md, 'Layers')."""
        base = cls.defaults(features)
        if not features["simt"]:
            return base.fit(layout, s)
        if layout == "fns" or s > 1:
            # long contiguous runs: 1024 items per feature, float4 loads (4x the bytes in flight)
            wgs = min(1024, features["max_work_group_size"])
            return cls(WGS=wgs, FPG=1, VW=4, BLOCKED=0).fit(layout, s)
        # [n, f] rows: neighbouring work-items take neighbouring features (coalesced), and as
        # few items per feature as still make ~64k work-items in all
        fpg = 64
        wgs = 1
        while wgs * 2 * fpg <= min(1024, features["max_work_group_size"]) and \
                f * wgs < 65536 and wgs * 2 <= n:
            wgs *= 2
        return cls(WGS=wgs, FPG=fpg, VW=1, BLOCKED=0)

    def fit(self, layout, s):
        """These parameters with VW lowered (16 -> 4 -> 1) until a unit of VW elements is one
        contiguous load in ``layout``; used for the defaults, where the shape is known only
        later."""
        for vw in (self.VW, 4, 1):
            if vw <= self.VW and (layout == "fns" or s % vw == 0):
                return self.replace(VW=vw)
        return self.replace(VW=1)


def _shape(n, f, s):
    n, f, s = int(n), int(f), int(s)
    if min(n, f, s) < 1:
        raise ValueError(f"shape n={n}, f={f}, s={s}: every dimension must be >= 1")
    if n * f * s + 4096 > INT_MAX:  # indices are 32-bit ints in the kernels
        raise ValueError(f"n*f*s = {n * f * s} elements is too many for one launch")
    return n, f, s


def _check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"{name}={value!r}: expected one of {choices}")


def _same_buffer(a, b):
    return getattr(a, "buffer", a) == getattr(b, "buffer", b)


class BiasAct:
    """y[n, f, s] ("nfs") = act(z + b[f]), z in ``src_layout``. ``bias=False`` builds a kernel
    without the bias (``b`` is then ignored and may be None). With src_layout "nfs" y may be z
    (in place); with "fns" it may not (the transposition would overwrite unread input)."""

    def __init__(self, device, n, f, s, act, src_layout="nfs", bias=True, params=None):
        self.n, self.f, self.s = _shape(n, f, s)
        _check_choice("act", act, ACTIVATIONS)
        _check_choice("src_layout", src_layout, LAYOUTS)
        self.act, self.src_layout, self.bias = act, src_layout, bool(bias)
        bucket = shape_bucket(self.n, f"{self.f}x{self.s} {act} {src_layout} bias{int(self.bias)}")
        self.params = params or choose(device, EltwiseParams, "bias_act", bucket,
                                       EltwiseParams.defaults(device.features))
        total = self.n * self.f * self.s
        self.launch = Launch(device, self.params, "bias_act", [None] * (3 if self.bias else 2),
                             lambda p: p.global_size(total),
                             tune=("bias_act", bucket, None),
                             kernel="bias_act", n=self.n, f=self.f, s=self.s, act=act,
                             layout=src_layout, bias=int(self.bias))
        self.params = self.launch.params

    def __call__(self, z, b, y, wait_for=None):
        if self.src_layout == "fns" and _same_buffer(z, y):
            raise ValueError("BiasAct from the fns layout cannot run in place: pass another y")
        args = (z, b, y) if self.bias else (z, y)
        return self.launch(*args, wait_for=wait_for)


class ActBwd:
    """dz = dy * act'(y): y is the activation's output and dy its gradient, both "nfs"; dz is
    written in ``dst_layout`` ("fns" feeds a conv's weight-gradient GEMM). With "nfs", dz may be
    dy (in place)."""

    def __init__(self, device, n, f, s, act, dst_layout="nfs", params=None):
        self.n, self.f, self.s = _shape(n, f, s)
        _check_choice("act", act, ACTIVATIONS)
        _check_choice("dst_layout", dst_layout, LAYOUTS)
        self.act, self.dst_layout = act, dst_layout
        bucket = shape_bucket(self.n, f"{self.f}x{self.s} {act} {dst_layout}")
        self.params = params or choose(device, EltwiseParams, "act_bwd", bucket,
                                       EltwiseParams.defaults(device.features))
        total = self.n * self.f * self.s
        self.launch = Launch(device, self.params, "act_bwd", [None] * 3,
                             lambda p: p.global_size(total),
                             tune=("act_bwd", bucket, None),
                             kernel="act_bwd", n=self.n, f=self.f, s=self.s, act=act,
                             layout=dst_layout)
        self.params = self.launch.params

    def __call__(self, y, dy, dz, wait_for=None):
        if self.dst_layout == "fns" and (_same_buffer(dy, dz) or _same_buffer(y, dz)):
            raise ValueError("ActBwd into the fns layout cannot run in place: pass another dz")
        return self.launch(y, dy, dz, wait_for=wait_for)


class BiasGrad:
    """db[f] = sum over n and s of dz (``layout`` "nfs" or "fns"); accumulate=True adds to db
    instead (a batch processed in chunks). Fixed-order reduction: bitwise reproducible."""

    def __init__(self, device, n, f, s, layout="nfs", accumulate=False, params=None):
        self.n, self.f, self.s = _shape(n, f, s)
        _check_choice("layout", layout, LAYOUTS)
        self.layout, self.accumulate = layout, bool(accumulate)
        bucket = shape_bucket(self.n, f"{self.f}x{self.s} {layout} acc{int(self.accumulate)}")
        default = BiasGradParams.for_shape(device.features, self.n, self.f, self.s, layout)
        if not default.valid(device.features):
            default = BiasGradParams.defaults(device.features).fit(layout, self.s)
        self.params = params or choose(device, BiasGradParams, "bias_grad", bucket,
                                       default).fit(layout, self.s)
        # Tuning candidates: the space's points with VW fitted to this layout and shape.
        candidates = lambda: list(dict.fromkeys(  # noqa: E731
            p.fit(layout, self.s) for p in BiasGradParams.valid_space(device.features)))
        self.launch = Launch(device, self.params, "bias_grad", [None] * 2,
                             lambda p: p.global_size(self.f),
                             tune=("bias_grad", bucket, candidates),
                             fit=lambda p: p.fit(layout, self.s),
                             kernel="bias_grad", n=self.n, f=self.f, s=self.s, layout=layout,
                             accumulate=int(self.accumulate))
        self.params = self.launch.params

    def __call__(self, dz, db, wait_for=None):
        return self.launch(dz, db, wait_for=wait_for)


__all__ = ["ACTIVATIONS", "LAYOUTS", "EltwiseParams", "BiasGradParams", "BiasAct", "ActBwd",
           "BiasGrad"]
