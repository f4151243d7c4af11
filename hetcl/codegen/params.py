"""Tunable parameters of each kernel template: one frozen dataclass per template.

Each class knows its template, its per-device defaults (from the feature flags of
hetcl.device.features, never from vendor names), its search space ``space()`` and which points
of it a device can run (``valid(features)``: work-group size, local-memory bytes, divisibility).
Instances are hashable and render into the template as upper-case names.
"""
import dataclasses
import itertools

FLOAT_BYTES = 4


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
    # work_group_size(), local_mem_bytes().

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

    template = "gemm.cl.mako"

    def check(self):
        if min(self.MWG, self.NWG, self.KWG, self.MDIMC, self.NDIMC, self.VWN) < 1:
            return "every tunable must be positive"
        if self.VWN not in (1, 2, 4, 8, 16):
            return f"VWN={self.VWN} is not an OpenCL vector width (1, 2, 4, 8, 16)"
        if self.MWG % self.MDIMC or self.NWG % self.NDIMC:
            return "MWG must be a multiple of MDIMC and NWG of NDIMC"
        if (self.NWG // self.NDIMC) % self.VWN:
            return "NWI = NWG/NDIMC must be a multiple of VWN"
        if (self.MWG // self.MDIMC) * (self.NWG // self.NDIMC) > 256:
            return "more than 256 accumulators per work-item"
        if self.USE_LOCAL:
            threads = self.work_group_size()
            if (self.MWG * self.KWG) % threads or (self.KWG * self.NWG) % threads:
                return "tile loads must divide evenly over the work-group"
        return None

    def work_group_size(self):
        return self.MDIMC * self.NDIMC

    def local_mem_bytes(self):
        if not self.USE_LOCAL:
            return 0
        return FLOAT_BYTES * self.KWG * ((self.MWG + 1) + (self.NWG + 1))

    def global_size(self, m, n, batch=1):
        return (-(-n // self.NWG) * self.NDIMC, -(-m // self.MWG) * self.MDIMC, batch)

    def local_size(self):
        return (self.NDIMC, self.MDIMC, 1)

    @classmethod
    def defaults(cls, features):
        if features["local_memory"]:
            # GPU: 64x64 tiles in local memory, 256 work-items each owning a 4x4 block of C.
            return cls(MWG=64, NWG=64, KWG=16, MDIMC=16, NDIMC=16, VWN=1, USE_LOCAL=1)
        # CPU: caches replace local memory. Explicit float16 vectors beat relying on PoCL's
        # vectorisation across work-items (measured: 35 vs 4 GFLOP/s at 1024^3 on 2 cores).
        return cls(MWG=16, NWG=128, KWG=4, MDIMC=2, NDIMC=8, VWN=16, USE_LOCAL=0)

    @classmethod
    def space(cls, features):
        out = []
        use_local = (0, 1) if features["local_memory"] else (0,)
        for mwg, nwg, kwg, mdimc, ndimc, vwn, loc in itertools.product(
                (16, 32, 64, 128), (16, 32, 64, 128), (4, 8, 16, 32), (4, 8, 16, 32),
                (4, 8, 16, 32), (1, 2, 4, 8), use_local):
            p = cls(mwg, nwg, kwg, mdimc, ndimc, vwn, loc)
            if p.check() is None:
                out.append(p)
        return out
