"""Host side of kernels/gemm.cl.mako: its tunable parameters, and a (batched) GEMM built once
for fixed shapes and then only enqueued."""
import contextlib
import dataclasses

import numpy as np

from ..tuning.buckets import gemm_bucket
from .launch import Launch, choose
from .params import FLOAT_BYTES, VECTOR_WIDTHS, KernelParams, vector_width

_ARG_TYPES = ([np.int32] * 3 + [np.float32] * 2 + [None, np.int32, np.int32, np.int32] * 3)

# (CPU search) a work-item's register block: MWI rows x NV vectors of VWN, stacked MDIMC high;
# at most 24 accumulator vectors, so that operands still fit the 32 vector registers.
_CPU_ROWS, _CPU_VECTORS, _CPU_BLOCK = (4, 6, 8, 12), (1, 2, 3), 24
_CPU_STACK, _CPU_VWN = (1, 4, 8, 16), (8, 16)


@dataclasses.dataclass(frozen=True)
class GemmParams(KernelParams):
    """See the header of kernels/gemm.cl.mako for what each tunable means."""
    MWG: int = 64
    NWG: int = 64
    KWG: int = 16
    MDIMC: int = 16
    NDIMC: int = 16
    VWN: int = 1
    USE_LOCAL: int = 1
    VWM: int = 1
    DBUF: int = 0
    MLOOP: int = 1

    template = "gemm.cl.mako"
    LOCAL = ("NDIMC", "MDIMC", 1)
    CHOICES = {"VWN": VECTOR_WIDTHS, "VWM": VECTOR_WIDTHS, "USE_LOCAL": (0, 1), "DBUF": (0, 1)}
    # Accumulators per work-item, (MWG/MDIMC) x (NWG/NDIMC): check() accepts up to MAX; the
    # search (space, neighbours) stays within SEARCHED, past which registers spill.
    MAX_ACCUMULATORS = 512
    SEARCHED_ACCUMULATORS = 256
    # Devices with local memory: tiles in it (the first grid), or straight from global memory.
    LOCAL_GRIDS = (
        {"MWG": (16, 32, 64, 128), "NWG": (16, 32, 64, 128), "KWG": (4, 8, 16, 32),
         "MDIMC": (4, 8, 16, 32), "NDIMC": (4, 8, 16, 32), "VWN": (1, 2, 4, 8),
         "USE_LOCAL": (1,), "VWM": (1, 2, 4, 8), "DBUF": (0, 1)},
        {"MWG": (16, 32, 64, 128), "NWG": (16, 32, 64, 128), "KWG": (4, 8, 16, 32),
         "MDIMC": (4, 8, 16, 32), "NDIMC": (4, 8, 16, 32), "VWN": (1, 2, 4, 8),
         "USE_LOCAL": (0,)})
    # CPUs: register blocks (see _CPU_* above) of every row count, stacked MDIMC high.
    CPU_GRIDS = (
        {"MWG": tuple(sorted({r * s for r in _CPU_ROWS for s in _CPU_STACK})),
         "NWG": tuple(sorted({v * w for v in _CPU_VECTORS for w in _CPU_VWN})),
         "KWG": (32, 128, 512), "MDIMC": _CPU_STACK, "NDIMC": (1,), "VWN": _CPU_VWN,
         "USE_LOCAL": (0,)},)
    # Moves that keep a work-item's block (MWI x NWI) the same size while the tile grows or
    # shrinks (single moves of these mostly break divisibility).
    PAIRS = (("MWG", "MDIMC"), ("NWG", "NDIMC"), ("MWG", "NWG"), ("MDIMC", "NDIMC"))

    def accumulators(self):
        return (self.MWG // (self.MDIMC * self.MLOOP)) * (self.NWG // self.NDIMC)

    def rules(self):
        yield (not (self.MWG % (self.MDIMC * self.MLOOP) or self.NWG % self.NDIMC),
               "MWG must be a multiple of MDIMC * MLOOP and NWG of NDIMC")
        yield self.MLOOP == 1 or not self.USE_LOCAL, "MLOOP > 1 without local memory only"
        yield (self.NWG // self.NDIMC) % self.VWN == 0, "NWI = NWG/NDIMC must be a multiple of VWN"
        yield (self.accumulators() <= self.MAX_ACCUMULATORS,
               f"more than {self.MAX_ACCUMULATORS} accumulators per work-item")
        if self.USE_LOCAL:
            threads = self.work_group_size()
            yield (not ((self.MWG * self.KWG) % threads or (self.KWG * self.NWG) % threads),
                   "tile loads must divide evenly over the work-group")
            yield (self.MWG // self.MDIMC) % self.VWM == 0, "MWI = MWG/MDIMC must be a multiple of VWM"
        else:
            yield (self.VWM == 1 and not self.DBUF,
                   "VWM and DBUF apply to the local-memory path only (USE_LOCAL=1)")

    def searched(self):
        if not super().searched():
            return False
        if self.NDIMC == 1 and not self.USE_LOCAL:  # a CPU register block (CPU_GRIDS)
            rows, vectors = self.MWG // (self.MDIMC * self.MLOOP), self.NWG // self.VWN
            return rows in _CPU_ROWS and vectors in _CPU_VECTORS and rows * vectors <= _CPU_BLOCK
        return self.accumulators() <= self.SEARCHED_ACCUMULATORS

    @classmethod
    def grids(cls, features):
        return cls.LOCAL_GRIDS if features["local_memory"] else cls.CPU_GRIDS

    def local_mem_bytes(self):
        if not self.USE_LOCAL:
            return 0
        # padded rows as in the template (B's pad only when transposed: the larger bound)
        rows = (self.MWG + self.VWM) + (self.NWG + self.VWN)
        return FLOAT_BYTES * self.KWG * rows * (2 if self.DBUF else 1)

    def global_size(self, m, n, batch=1):
        return (-(-n // self.NWG) * self.NDIMC, -(-m // self.MWG) * self.MDIMC, batch)

    @classmethod
    def defaults(cls, features):
        if features["local_memory"]:
            # GPU: 128x128 tiles in local memory, 256 work-items each owning an 8x8 block of C
            # (64 accumulators) read from the tiles as float4 vectors of A and B, the next K
            # tile prefetched while this one is multiplied (DBUF). Against cuBLAS SGEMM: see
            # docs/benchmarks.md, "GPU GEMM kernel".
            return cls(MWG=128, NWG=128, KWG=16, MDIMC=16, NDIMC=16, VWN=4, USE_LOCAL=1,
                       VWM=4, DBUF=1)
        # CPU: each work-item is a register block (cpu_block); 16 work-items stacked along M go
        # through each panel of B together (a barrier per KWG step), so it is read from L1
        # rather than L2/L3. 1x1 work-groups (no panel sharing) and a 16x128 float16 tile were
        # both clearly slower on large squares (docs/benchmarks.md, 'GEMM').
        mwi, nwg, vwn = cls.cpu_block(features)
        return cls(MWG=16 * mwi, NWG=nwg, KWG=128, MDIMC=16, NDIMC=1, VWN=vwn, USE_LOCAL=0)

    @classmethod
    def _packed(cls, m, k, mwi, nwg, vwn):
        """CPU, op(A) = A^T with a short K (a conv's input gradient, weights^T @ dz, ldb a
        large power of two): one work-item packs its K x NWG panel of B into private memory
        and runs up to 48 register blocks down M over it (MLOOP, see the template). Read
        straight from B, the panel is gone from the caches before the next block of rows
        needs it again (its rows all map to one cache set), so every block re-reads it from
        L3 or memory (docs/benchmarks.md, 'CPU input-gradient GEMMs: packed B panels')."""
        blocks = m // mwi
        loop = max(d for d in range(1, 49) if blocks % d == 0)
        return cls(MWG=loop * mwi, NWG=nwg, KWG=k, MDIMC=1, NDIMC=1, VWN=vwn, USE_LOCAL=0,
                   MLOOP=loop)

    @staticmethod
    def cpu_block(features):
        """(rows, columns, vector width) of a CPU work-item's block of C, from the vector width
        the device's compiler handles: its accumulators take about half of the vector
        registers, the rest hold operands. 16-wide (AVX-512, 32 registers): 8 x 32 = 16
        accumulators. Narrower (AVX2, 16 registers): 6 rows of 2 vectors = 12 (measured against
        8 x 32 in docs/benchmarks.md, "Vector width")."""
        width = vector_width(features)
        if width >= 16:
            return 8, 32, 16
        return 6, 2 * width, width

    @classmethod
    def for_shape(cls, features, m, n, k, trans_a=False, trans_b=False):
        """The default for one problem shape (the tuning DB overrides it). On CPUs the 128-row
        panels of the default only pay off when M and K are large; the skinny GEMMs of small
        conv layers (M = 6 or 16 filters, K = 25, or K = a batch of pixels) run several times
        faster as one-work-item groups of one register block (docs/benchmarks.md, 'GEMM')."""
        if not features["local_memory"] and (m < 128 or k < 128):
            mwi, nwg, vwn = cls.cpu_block(features)
            if trans_a and not trans_b and k < 128 and not m % mwi:
                return cls._packed(m, k, mwi, nwg, vwn)
            if m % mwi and not m % 8:
                # M a multiple of 8 but not of the block's rows (AVX2's 6: a residual's 16, 32,
                # 64 filters): 4-row blocks with as many accumulators (AVX2: 4 rows of 3
                # vectors), stacked to cover M (at most 16) so that they share each panel of
                # B. Far faster than 6-row blocks with a ragged last one, and faster than 8-row
                # blocks of 2 vectors, whose 16 accumulators leave AVX2 no operand registers
                # (docs/benchmarks.md, 'GEMM').
                stack, vectors = min(m // 4, 16), max(1, mwi * (nwg // vwn) // 4)
                return cls(MWG=4 * stack, NWG=vectors * vwn, KWG=128, MDIMC=stack, NDIMC=1,
                           VWN=vwn, USE_LOCAL=0)
            return cls(MWG=mwi, NWG=nwg, KWG=128, MDIMC=1, NDIMC=1, VWN=vwn, USE_LOCAL=0)
        if features["local_memory"] and m <= 64:
            # GPU, few rows (the conv layers' filters): 128-row tiles would be half empty.
            # Wide N: 32x128 tiles of 4x8 per work-item (far faster than 128x128 tiles on a
            # conv's 64x262144x576: docs/benchmarks.md, 'GEMM'); else 64x64 tiles of 8x8 (more
            # work-groups for a narrow N).
            if n >= 4096:
                return cls(MWG=32, NWG=128, KWG=16, MDIMC=8, NDIMC=16, VWN=4, USE_LOCAL=1,
                           VWM=4, DBUF=1)
            return cls(MWG=64, NWG=64, KWG=16, MDIMC=8, NDIMC=8, VWN=4, USE_LOCAL=1, VWM=4,
                       DBUF=1)
        return cls.defaults(features)


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
                  GemmParams.for_shape(device.features, m, n, k, trans_a, trans_b))


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
        self.epilogue = None if epilogue is None else (str(epilogue[0]), int(epilogue[1]))
        if self.epilogue and (self.trans_a and self.trans_b or self.batch != 1):
            raise ValueError("a GEMM with an epilogue takes one batch and not both transposes")
        self._launch = Launch(
            device, params, "gemm", _ARG_TYPES + ([None] if self.epilogue else []),
            self._global_size, context=self._template_context,
            tune=("gemm", gemm_bucket(*self.problem), None),
            label=f"gemm{'T' if trans_a else 'N'}{'T' if trans_b else 'N'} {m}x{n}x{k}"
                  + (f"x{batch}" if batch > 1 else ""))
        self.params = self._launch.params
        self.swap = self._swap(self.params)

    def _global_size(self, params):
        rows, cols = (self.n, self.m) if self._swap(params) else (self.m, self.n)
        return params.global_size(rows, cols, self.batch)

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
        buf = lambda x: getattr(x, "buffer", x)  # noqa: E731
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
        return self._launch.enqueue(args, wait_for, queue)


def gemm(device, a, b, trans_a=False, trans_b=False, params=None):
    """Convenience: numpy in, numpy out (2-D float32)."""
    from ..backend.buffers import empty, to_device
    a = np.ascontiguousarray(a, np.float32)
    b = np.ascontiguousarray(b, np.float32)
    m, k = (a.shape[1], a.shape[0]) if trans_a else a.shape
    n = b.shape[0] if trans_b else b.shape[1]
    op = Gemm(device, m, n, k, trans_a, trans_b, params=params)
    c = empty(device, (m, n))
    op(to_device(device, a), to_device(device, b), c)
    return c.get()
