"""A built kernel with fixed launch geometry: the common host side of every template.

Kernel wrappers (gemm.py, conv.py, pool.py, eltwise.py, loss.py, update.py) build once in their
constructor and then only enqueue. Arguments may be DeviceArrays or cl.Buffers; scalars are
converted by the dtypes given (None marks a buffer argument).
"""
import contextlib

import pyopencl as cl

from . import tunedb
from .cache import build

_launches = None  # a list while record_launches() is active


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
    there; else `default`."""
    found = tunedb.database().lookup(device, kernel, bucket)
    if found:
        try:
            params = cls(**found)
            if params.valid(device.features):
                return params
        except TypeError:  # an entry from another hetcl version: ignore it
            pass
    return default


def enqueue(owner, queue, args, wait_for=None):
    """Enqueue owner.kernel (global/local size from the owner) with args. OpenCL kernels keep
    their arguments between launches, and in a training step most launches repeat the last
    ones exactly, so arguments are set only when one changed: setting them is more than half
    of pyopencl's host time per launch (4.3 -> 1.8 us measured on PoCL)."""
    if args != owner.last_args:  # (tuple comparison: identity first, so buffers are cheap)
        owner.kernel.set_args(*args)
        owner.last_args = args
    event = owner.device.record(cl.enqueue_nd_range_kernel(
        queue or owner.device.queue, owner.kernel, owner.global_size, owner.local_size,
        wait_for=wait_for))
    if _launches is not None:
        _launches.append((owner, event))
    return event


def round_up(n, multiple):
    return -(-int(n) // int(multiple)) * int(multiple)


class Launch:
    def __init__(self, device, params, kernel_name, arg_types, global_size, local_size,
                 options="", tune=None, **context):
        """tune: (kernel, bucket, candidates or None) - the tuning-DB entry that chose params
        (see choose()); candidates() lists the points worth trying for this shape (default:
        the valid points of the params' space)."""
        self.device = device
        self.params = params
        self.tune = tune
        reason = params.invalid_reason(device.features)
        if reason:
            raise ValueError(f"{type(params).__name__} {params} invalid on {device}: {reason}")
        program = build(device, params, options=options, **context)
        self.kernel = cl.Kernel(program, kernel_name)  # a kernel object per launch: own args
        self.kernel.set_scalar_arg_dtypes(arg_types)
        self.global_size = tuple(int(g) for g in global_size)
        self.local_size = None if local_size is None else tuple(int(x) for x in local_size)
        self.last_args = None

    def __call__(self, *args, wait_for=None, queue=None):
        # (a list comprehension: 0.32 us here against a generator's 0.44; every launch pays it)
        return enqueue(self, queue, tuple([getattr(a, "buffer", a) for a in args]), wait_for)
