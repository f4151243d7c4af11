"""A built kernel with fixed launch geometry: the common host side of every template.

Kernel wrappers (gemm.py, conv.py, pool.py, eltwise.py, loss.py, update.py) build once in their
constructor and then only enqueue. Arguments may be DeviceArrays or cl.Buffers; scalars are
converted by the dtypes given (None marks a buffer argument).
"""
import contextlib
import warnings

import pyopencl as cl

from ..errors import NoWorkingVariant, VariantBroken, VariantWarning
from ..tuning import tunedb
from .params import vector_width
from .prove import build

_launches = None  # a list while record_launches() is active
replaced = []  # (device, template, broken params, params used instead, reason), in order


@contextlib.contextmanager
def record_launches():
    """Collect (owner, event) of every kernel launch inside; owner.tune = (kernel, bucket,
    candidates) says which tuning-DB entry chose its parameters (the tuner times kernels in
    their training step with these). A composite op's launches appear twice: under their
    own kernels and under the composite (attribute()), so don't sum over all owners."""
    global _launches
    _launches, saved = [], _launches
    try:
        yield _launches
    finally:
        _launches = saved


def attribute(owner, events):
    """Record the launches of a composite op (one built of other kernels, e.g. the split-K
    GEMM) once more under the composite, whose tune names its own DB entry; -> the last
    event. The kernels inside keep their own records and entries."""
    if _launches is not None:
        _launches.extend((owner, e) for e in events)
    return events[-1]


def choose(device, cls, kernel, bucket, default):
    """The tuning DB's `cls` parameters for (kernel, bucket) on this device, if they are valid
    there; else `default`. An entry tuned on another device of the vendor and kind has its
    vector widths capped at this device's (its compiler may target narrower vectors)."""
    found, own = tunedb.database().find(device, kernel, bucket)
    if found:
        try:
            params = cls(**found)
            if not own:
                params = params.capped(vector_width(device.features))
            if params.valid(device.features):
                return params
        except TypeError:  # an entry from another hetcl version: ignore it
            pass
    return default


def enqueue(owner, queue, args, wait_for=None):
    """Enqueue owner.kernel (global/local size from the owner) with args. OpenCL kernels keep
    their arguments between launches, and in a training step most launches repeat the last
    ones exactly, so arguments are set only when one changed: setting them is more than half
    of pyopencl's host time per launch (docs/benchmarks.md, 'Training throughput')."""
    if args != owner.last_args:  # (tuple comparison: identity first, so buffers are cheap)
        owner.kernel.set_args(*args)
        owner.last_args = args
    event = owner.device.record(cl.enqueue_nd_range_kernel(
        queue or owner.device.queue, owner.kernel, owner.global_size, owner.local_size,
        wait_for=wait_for))
    if _launches is not None:
        _launches.append((owner, event))
    return event


def build_variant(device, params, context, options="", fit=None):
    """(params, program) of the first variant that works on `device`: `params` itself, else the
    first of params.fallbacks() (prove.py proves each). context: the template context, or a
    function of the params giving it; fit: a function that adapts a fallback to the shape.
    Raises NoWorkingVariant, which names every reason."""
    reasons = []
    fallbacks = params.fallbacks(device.features)
    if fit is not None:
        fallbacks = [p for p in dict.fromkeys(fit(p) for p in fallbacks) if p != params]
    for candidate in [params] + fallbacks:
        try:
            ctx = context(candidate) if callable(context) else context
            program = build(device, candidate, options=options, **ctx)
        except VariantBroken as e:
            reasons.append(e.reason)
            continue
        if candidate != params:
            _replaced(device, params, candidate, reasons[0])
        return candidate, program
    raise NoWorkingVariant(f"no variant of {params.template} works on {device} "
                           f"({len(reasons)} tried; {params}: {reasons[0]})")


def _replaced(device, broken, used, reason):
    """Record a replacement; say it once per process, device and broken variant."""
    if not any(r[0] is device and r[2] == broken for r in replaced):
        warnings.warn(f"{broken.template} {broken} does not work on {device} ({reason}); "
                      f"using {used} instead", VariantWarning, stacklevel=4)
    replaced.append((device, broken.template, broken, used, reason))


def round_up(n, multiple):
    return -(-int(n) // int(multiple)) * int(multiple)


class Launch:
    """One kernel of a template built for one device and shape: its parameters (the variant
    built), its launch geometry (global size from the shape, the work-group from the
    parameters' LOCAL) and its arguments, set only when they change (enqueue)."""

    def __init__(self, device, params, kernel_name, arg_types, global_size, options="",
                 tune=None, fit=None, context=None, label=None, **names):
        """tune: (kernel, bucket, candidates or None) - the tuning-DB entry that chose params
        (see choose()); candidates() lists the points worth trying for this shape (default:
        the valid points of the params' space). global_size: a function of the params that
        gives it (a variant that replaces a broken one, see build_variant, may have another
        geometry); fit: see build_variant. The template context: `names`, or context(params)
        where it depends on the variant. label: what the launch computes, for profiles
        (default: the kernel's name)."""
        self.device = device
        self.tune = tune
        self.label = label or kernel_name
        reason = params.invalid_reason(device.features)
        if reason:
            raise ValueError(f"{type(params).__name__} {params} invalid on {device}: {reason}")
        self.params, program = build_variant(device, params, context or names, options, fit)
        self.kernel = cl.Kernel(program, kernel_name)  # a kernel object per launch: own args
        self.kernel.set_scalar_arg_dtypes(arg_types)
        self.global_size = tuple(int(g) for g in global_size(self.params))
        self.local_size = tuple(int(x) for x in self.params.local_size()) or None
        self.last_args = None

    def __call__(self, *args, wait_for=None, queue=None):
        # (a list comprehension: cheaper than a generator, and every launch pays it)
        return enqueue(self, queue, tuple([getattr(a, "buffer", a) for a in args]), wait_for)

    def enqueue(self, args, wait_for=None, queue=None):
        """Like calling it, for arguments already converted (buffers as cl.Buffers)."""
        return enqueue(self, queue, args, wait_for)
