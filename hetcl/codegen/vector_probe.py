"""The device feature "vector_width": the widest vector the device's compiler handles, proven.

Drivers report a preferred vector width, but the compiler behind them may target less: PoCL
built with an LLVM that does not know the CPU compiles for an older one (on a Zen 4 CPU, PyPI's
PoCL 3.0 with LLVM 14 reports 16-wide floats and targets znver3, without AVX-512), and its
16-wide kernels then warn, crash the compiler or run as emulated vectors. So hetcl proves it:
kernels/vector_probe.cl.mako at 16, 8, 4, 2 and 1 floats, each built and run in the prover's
child process (prove.py), until one builds without a warning and matches numpy. The verdicts
are cached like every other (verdicts.py), so this costs a child build once per driver.
"""
import dataclasses
import os
import time
import warnings

import numpy as np
import pyopencl as cl

from ..errors import BuildError, ProbeFailed, VariantBroken
from .cache import quiet_stderr
from .params import VECTOR_WIDTHS, KernelParams
from .render import render

WIDTHS = tuple(sorted(VECTOR_WIDTHS, reverse=True))  # widest first


@dataclasses.dataclass(frozen=True)
class VectorProbeParams(KernelParams):
    """VW: the vector width under test (see the template's header)."""
    VW: int = 16

    template = "vector_probe.cl.mako"
    CHOICES = {"VW": WIDTHS}

    @classmethod
    def defaults(cls, features):
        return cls()

    def fallbacks(self, features):
        return []  # each width is asked on its own (vector_width)


def probe(device, params):
    """The prover's check (prover.py): the build log must hold no warning about the vectors
    (ProbeFailed names the first), and the result match numpy. -> the largest error. A warning
    the scalar build of the same kernel gets too is about the driver, not the width (NVIDIA's
    compiler warns of every kernel that it overrides a noinline attribute), and is left out."""
    from ..backend.buffers import empty, to_device
    program, warned = _build(device, params)
    if warned and params.VW > 1:
        warned = [w for w in warned if w not in _build(device, params.replace(VW=1))[1]]
    if warned:
        raise ProbeFailed(f"the compiler warns on {params.VW}-wide vectors: {warned[0]}")
    n = 64
    a = np.arange(n * params.VW, dtype=np.int64).astype(np.uint8)
    a_dev, b = to_device(device, a), empty(device, (n * params.VW,))  # (kept until b.get())
    kernel = cl.Kernel(program, "vector_probe")
    kernel.set_args(a_dev.buffer, b.buffer)
    cl.enqueue_nd_range_kernel(device.queue, kernel, (n,), None)
    return float(np.abs(b.get() - (a * 2.0 + 1.0)).max())


def _build(device, params):
    """-> (program, the warnings of its build log, each as the text after its location)."""
    # Built here, not from a cache: a driver's own kernel cache (PoCL's) skips the compiler
    # and its warnings, so the source carries a comment no cache has seen.
    source = render(params.template, params) + f"\n// {os.getpid()} {time.time_ns()}\n"
    with warnings.catch_warnings(), quiet_stderr():  # (the log is read below)
        warnings.simplefilter("ignore")
        program = cl.Program(device.context, source).build(devices=[device.cl_device])
    try:
        log = program.get_build_info(device.cl_device, cl.program_build_info.LOG)
    except cl.Error:
        log = ""
    return program, [line.rsplit(": ", 1)[-1].strip() for line in log.splitlines()
                     if "warning" in line.lower()]


_unproven = {}  # fingerprint -> width found in this process with proving off


def vector_width(device):
    """The widest of WIDTHS whose probe kernel is proven right on `device` (1 at worst). With
    proving off (HETCL_PROVE=0) the probe runs in this process, once per process."""
    from . import prove
    if prove.enabled():
        for width in WIDTHS:
            try:
                prove.build(device, VectorProbeParams(width))
                return width
            except VariantBroken:
                continue
        return 1
    if device.fingerprint not in _unproven:
        _unproven[device.fingerprint] = next(
            (w for w in WIDTHS if _passes(device, VectorProbeParams(w))), 1)
    return _unproven[device.fingerprint]


def _passes(device, params):
    try:
        return probe(device, params) == 0
    except (BuildError, ProbeFailed, cl.Error):
        return False
