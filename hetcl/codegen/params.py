"""Tunable parameters of a kernel template, declared once per kernel (after CLBlast's tuner
settings): a frozen dataclass whose fields are the tunables, with class-level declarations

  LOCAL          the work-group, one entry per NDRange dimension: a tunable's name or 1
  CHOICES        {tunable: the values it may take}; every other tunable is a positive int
  POWERS_OF_TWO  tunables that must be powers of two (the widths of reduction trees)
  GRIDS          the search space: a union of grids, each {tunable: values} (a tunable a
                 grid leaves out keeps its default); grids(features) where it depends on
                 the device
  PAIRS          tunables that neighbours() also moves together, both up or both down

and per kernel only what cannot be declared: rules() (constraints between tunables),
local_mem_bytes(), global_size(shape...) and defaults(features) (from the feature flags of
hetcl.backend.device.features, never from vendor names). check(), space(), neighbours(), local_size()
and work_group_size() are generic. Instances are hashable and render into the template as
upper-case names.
"""
import dataclasses
import itertools
import math

FLOAT_BYTES = 4
VECTOR_WIDTHS = (1, 2, 4, 8, 16)  # OpenCL's float vector widths (float3 left out)
INT_MAX = 2 ** 31 - 1  # the kernels index with 32-bit ints
# No point of a search space has a larger work-group: the largest any device hetcl has met
# runs (valid() checks each device's own limit).
MAX_SEARCHED_GROUP = 1024


def vector_width(features):
    """The widest float vector the device's compiler handles (the device feature, proven by
    codegen/vector_probe.py); 16, OpenCL's widest, for feature sets that do not name one."""
    return features.get("vector_width", 16)


def _choices_text(allowed):
    return f"an OpenCL vector width {allowed}" if allowed == VECTOR_WIDTHS else \
        f"one of {allowed}"


@dataclasses.dataclass(frozen=True)
class KernelParams:
    template = None  # file name under kernels/
    LOCAL = ()
    CHOICES = {}
    POWERS_OF_TWO = ()
    GRIDS = ()
    PAIRS = ()

    def as_dict(self):
        return dataclasses.asdict(self)

    def replace(self, **changes):
        return dataclasses.replace(self, **changes)

    def __str__(self):
        return ",".join(f"{k}={v}" for k, v in self.as_dict().items())

    # --- validity -----------------------------------------------------------------------------
    def rules(self):
        """(holds, reason) of each constraint between tunables, in the order to report them;
        evaluated only once every tunable is in range."""
        return ()

    def check(self):
        """The first reason these parameters cannot run on any device, or None."""
        for name, value in self.as_dict().items():
            allowed = self.CHOICES.get(name)
            if allowed is not None and value not in allowed:
                return f"{name}={value} is not {_choices_text(allowed)}"
            if allowed is None and value < 1:
                return f"{name}={value}: every tunable must be positive"
            if name in self.POWERS_OF_TWO and value & (value - 1):
                return f"{name}={value} must be a power of two (reduction tree)"
        return next((reason for holds, reason in self.rules() if not holds), None)

    def local_size(self):
        return tuple(getattr(self, d) if isinstance(d, str) else d for d in self.LOCAL)

    def work_group_size(self):
        return math.prod(self.local_size())

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

    # --- the search ---------------------------------------------------------------------------
    def searched(self):
        """Whether the search visits this valid point: limits beyond validity (e.g. register
        pressure) that keep a search to the points worth timing."""
        return self.work_group_size() <= MAX_SEARCHED_GROUP

    @classmethod
    def grids(cls, features):
        return cls.GRIDS

    @classmethod
    def space(cls, features):
        """Every checked, searched point of the grids, each once, in grid order."""
        out = {}
        for grid in cls.grids(features):
            for values in itertools.product(*grid.values()):
                p = cls(**dict(zip(grid, values)))
                if p.check() is None and p.searched():
                    out[p] = None
        return list(out)

    @classmethod
    def valid_space(cls, features):
        return [p for p in cls.space(features) if p.valid(features)]

    def neighbours(self, features):
        """Valid, searched points one step away along one axis of the grid this point lies in,
        or along one of PAIRS (both up or both down): a local search from a good point finds
        more in a few dozen candidates than random samples of a space of thousands. A point
        outside every grid has none."""
        grid = next((g for g in self.grids(features)
                     if all(getattr(self, k) in v for k, v in g.items())), None)
        if grid is None:
            return []
        axes = [k for k, v in grid.items() if len(v) > 1]
        moves = [(k,) for k in axes] + [pair for pair in self.PAIRS
                                         if all(k in axes for k in pair)]
        out = []
        for names, d in itertools.product(moves, (-1, 1)):
            steps = {k: grid[k].index(getattr(self, k)) + d for k in names}
            if all(0 <= i < len(grid[k]) for k, i in steps.items()):
                p = self.replace(**{k: grid[k][i] for k, i in steps.items()})
                if p not in out and p.valid(features) and p.searched():
                    out.append(p)
        return out

    # --- broken variants ----------------------------------------------------------------------
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
