"""Tunable parameters of each kernel template: one frozen dataclass per template.

Each class knows its template, its per-device defaults (from the feature flags of
hetcl.device.features, never from vendor names), its search space ``space()`` and which points
of it a device can run (``valid(features)``: work-group size, local-memory bytes, divisibility).
Instances are hashable and render into the template as upper-case names.
"""
import dataclasses
import itertools

FLOAT_BYTES = 4
VECTOR_WIDTHS = (1, 2, 4, 8, 16)  # OpenCL's float vector widths (float3 left out)
INT_MAX = 2 ** 31 - 1  # the kernels index with 32-bit ints


def vector_width(features):
    """The widest float vector the device's compiler handles (the device feature, proven by
    codegen/vector_probe.py); 16, OpenCL's widest, for feature sets that do not name one."""
    return features.get("vector_width", 16)


@dataclasses.dataclass(frozen=True)
class KernelParams:
    template = None  # file name under kernels/

    def as_dict(self):
        return dataclasses.asdict(self)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def __str__(self):
        return ",".join(f"{k}={v}" for k, v in self.as_dict().items())

    # Subclasses define: defaults(features), space(features), check() -> reason or None,
    # work_group_size(), and local_mem_bytes() where they use local memory.

    def local_mem_bytes(self):
        return 0

    def valid(self, features):
        return self.invalid_reason(features) is None

    def invalid_reason(self, features):
        reason = self.check()
        if reason:
            return reason
        if self.work_group_size() > features["max_work_group_size"]:
            return (f"work-group of {self.work_group_size()} exceeds the device's "
                    f"{features['max_work_group_size']}")
        if self.local_mem_bytes() > features["local_mem_bytes"]:
            return (f"needs {self.local_mem_bytes()} B of local memory, device has "
                    f"{features['local_mem_bytes']}")
        return None

    @classmethod
    def valid_space(cls, features):
        return [p for p in cls.space(features) if p.valid(features)]

    def fallbacks(self, features):
        """Variants to try, in order, where this one is proven broken on a device: the same
        point with its vector widths (the VW* tunables) capped at 8, 4 and 1 - a compiler
        that mis-targets the vector unit fails on the widest vectors first - then the device's
        defaults, capped the same way. Only valid points, each once."""
        out = []
        for base in (self, type(self).defaults(features)):
            for cap in (None, 8, 4, 1):
                p = base.capped(cap)
                if p != self and p not in out and p.valid(features):
                    out.append(p)
        return out

    def capped(self, width):
        """These parameters with every vector width (VW*) at most `width` (None: unchanged)."""
        if width is None:
            return self
        return self.replace(**{k: min(v, width) for k, v in self.as_dict().items()
                               if k.startswith("VW")})


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

    template = "gemm.cl.mako"
    # Accumulators per work-item, (MWG/MDIMC) x (NWG/NDIMC): check() accepts up to MAX; the
    # search (space, neighbours) stays within SEARCHED, past which registers spill.
    MAX_ACCUMULATORS = 512
    SEARCHED_ACCUMULATORS = 256

    def accumulators(self):
        return (self.MWG // self.MDIMC) * (self.NWG // self.NDIMC)

    def check(self):
        if min(self.MWG, self.NWG, self.KWG, self.MDIMC, self.NDIMC, self.VWN) < 1:
            return "every tunable must be positive"
        if self.VWN not in (1, 2, 4, 8, 16):
            return f"VWN={self.VWN} is not an OpenCL vector width (1, 2, 4, 8, 16)"
        if self.MWG % self.MDIMC or self.NWG % self.NDIMC:
            return "MWG must be a multiple of MDIMC and NWG of NDIMC"
        if (self.NWG // self.NDIMC) % self.VWN:
            return "NWI = NWG/NDIMC must be a multiple of VWN"
        if self.accumulators() > self.MAX_ACCUMULATORS:
            return f"more than {self.MAX_ACCUMULATORS} accumulators per work-item"
        if self.VWM not in (1, 2, 4, 8, 16):
            return f"VWM={self.VWM} is not an OpenCL vector width (1, 2, 4, 8, 16)"
        if self.DBUF not in (0, 1):
            return "DBUF is 0 or 1"
        if self.USE_LOCAL:
            threads = self.work_group_size()
            if (self.MWG * self.KWG) % threads or (self.KWG * self.NWG) % threads:
                return "tile loads must divide evenly over the work-group"
            if (self.MWG // self.MDIMC) % self.VWM:
                return "MWI = MWG/MDIMC must be a multiple of VWM"
        elif self.VWM != 1 or self.DBUF:
            return "VWM and DBUF apply to the local-memory path only (USE_LOCAL=1)"
        return None

    def work_group_size(self):
        return self.MDIMC * self.NDIMC

    def local_mem_bytes(self):
        if not self.USE_LOCAL:
            return 0
        # padded rows as in the template (B's pad only when transposed: the larger bound)
        rows = (self.MWG + self.VWM) + (self.NWG + self.VWN)
        return FLOAT_BYTES * self.KWG * rows * (2 if self.DBUF else 1)

    def global_size(self, m, n, batch=1):
        return (-(-n // self.NWG) * self.NDIMC, -(-m // self.MWG) * self.MDIMC, batch)

    def local_size(self):
        return (self.NDIMC, self.MDIMC, 1)

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

    # Values each tunable takes in the local-memory space (space() below); neighbours() moves
    # along them.
    AXES = {"MWG": (16, 32, 64, 128), "NWG": (16, 32, 64, 128), "KWG": (4, 8, 16, 32),
            "MDIMC": (4, 8, 16, 32), "NDIMC": (4, 8, 16, 32), "VWN": (1, 2, 4, 8),
            "VWM": (1, 2, 4, 8), "DBUF": (0, 1)}
    # Moves of two tunables together that keep a work-item's block (MWI x NWI) the same size
    # while the tile grows or shrinks (single moves of these mostly break divisibility).
    PAIRS = (("MWG", "MDIMC"), ("NWG", "NDIMC"), ("MWG", "NWG"), ("MDIMC", "NDIMC"))

    def neighbours(self, features):
        """Valid local-memory points one step away along one axis or one pair of axes (both up
        or both down): a local search from a good point finds more in a few dozen candidates
        than random samples of a space of thousands."""
        if not self.USE_LOCAL:
            return []
        out = []

        def step(name, d):
            axis = self.AXES[name]
            i = axis.index(getattr(self, name)) + d if getattr(self, name) in axis else -1
            return axis[i] if 0 <= i < len(axis) else None
        moves = [{name: step(name, d)} for name in self.AXES for d in (-1, 1)]
        moves += [{a: step(a, d), b: step(b, d)} for a, b in self.PAIRS for d in (-1, 1)]
        for move in moves:
            if None in move.values():
                continue
            p = self.replace(**move)
            if p != self and p not in out and p.valid(features) and \
                    p.accumulators() <= self.SEARCHED_ACCUMULATORS:
                out.append(p)
        return out

    @classmethod
    def for_shape(cls, features, m, n, k):
        """The default for one problem shape (the tuning DB overrides it). On CPUs the 128-row
        panels of the default only pay off when M and K are large; the skinny GEMMs of small
        conv layers (M = 6 or 16 filters, K = 25, or K = a batch of pixels) run several times
        faster as one-work-item groups of one register block (docs/benchmarks.md, 'GEMM')."""
        if not features["local_memory"] and (m < 128 or k < 128):
            mwi, nwg, vwn = cls.cpu_block(features)
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

    @classmethod
    def space(cls, features):
        out = []
        if features["local_memory"]:
            for mwg, nwg, kwg, mdimc, ndimc, vwn, loc, vwm, dbuf in itertools.product(
                    (16, 32, 64, 128), (16, 32, 64, 128), (4, 8, 16, 32), (4, 8, 16, 32),
                    (4, 8, 16, 32), (1, 2, 4, 8), (0, 1), (1, 2, 4, 8), (0, 1)):
                p = cls(mwg, nwg, kwg, mdimc, ndimc, vwn, loc, vwm, dbuf)
                if p.check() is None and p.accumulators() <= cls.SEARCHED_ACCUMULATORS:
                    out.append(p)
            return out
        # CPU: register-blocked work-items (MWI rows x NV vectors of VWN) stacked MDIMC high;
        # at most 24 accumulator vectors, so that operands still fit the 32 vector registers.
        for mwi, nv, vwn, mdimc, kwg in itertools.product(
                (4, 6, 8, 12), (1, 2, 3), (8, 16), (1, 4, 8, 16), (32, 128, 512)):
            if mwi * nv <= 24:
                p = cls(mwi * mdimc, nv * vwn, kwg, mdimc, 1, vwn, 0)
                if p.check() is None:
                    out.append(p)
        return out
