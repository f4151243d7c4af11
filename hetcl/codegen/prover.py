"""The prover: the child process in which prove.py builds and first runs each kernel variant.

Started by prove.py only (it calls main()). It reads one JSON request per line
on stdin (device fingerprint, the params class and values, build options, template context),
builds the program with cache.build (which writes the binary to the kernel cache for the
parent), runs the kernel family's probe where it has one - the variant on a tiny input, its
result against numpy - and writes {"ok": bool, "reason": str} as one JSON line to the file
descriptor HETCL_PROVER_REPLY_FD. {"unavailable": why} means it cannot judge (the device is
not visible here): the parent then builds without proof. If the compiler kills this process,
the missing reply is the verdict.

HETCL_PROVE_FAULT injects faults, for tests: ``KIND:TEMPLATE[:PARAMS[:DEVICE]]``, several
joined by ``;``. KIND is abort, segv, hang (the build) or wrong (the probe's result); the fault
hits variants of TEMPLATE (e.g. gemm.cl.mako) whose parameter string contains PARAMS (e.g.
VWN=16) on the device of index DEVICE (as `hetcl devices` numbers them); empty fields match all.
"""
import ctypes
import importlib
import json
import os
import sys
import time

import pyopencl as cl

from .. import settings
from ..backend.device import list_devices
from ..errors import BuildError, HetclError, ProbeFailed
from .cache import build
from .probes import PROBES

TOLERANCE = 1e-4


def _tuples(value):
    """JSON gives lists where the template context had tuples (e.g. epilogue=("relu", 784))."""
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, dict):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def fault_for(template, params, device):
    """The injected fault (abort, segv, hang, wrong) for this variant, or None."""
    for kind, tmpl, needle, dev in settings.prove_faults():
        if tmpl in ("", template) and needle in str(params) and dev in ("", str(device.index)):
            return kind
    return None


def _crash(kind):
    if kind == "abort":
        os.abort()
    if kind == "segv":
        ctypes.string_at(0)  # reads address 0: SIGSEGV
    if kind == "hang":
        time.sleep(10 ** 6)


def _probe(template):
    target = PROBES.get(template)
    if target is None:
        return None
    module, function = target.split(":")
    return getattr(importlib.import_module(module), function)


def prove(request, devices):
    """The verdict on one request (see the module's docstring)."""
    device = devices.get(request["fingerprint"])
    if device is None:
        return {"unavailable": "the device is not visible to the prover process"}
    device.features = request["features"]  # the parent's: the same rendered source
    settings.replace_all(request["env"])
    cls = getattr(importlib.import_module(request["module"]), request["cls"])
    params = cls(**request["params"])
    context = _tuples(request["context"])
    fault = fault_for(params.template, params, device)
    _crash(fault)
    try:
        build(device, params, request["options"], request["directories"] or None, **context)
    except BuildError as e:
        lines = [x for x in e.log.splitlines() if "error" in x.lower()] or e.log.splitlines()
        return {"ok": False, "reason": "build failed: " + (lines[0].strip() if lines else "?")}
    probe = _probe(params.template)
    if probe is None:
        return {"ok": True}
    try:
        error = probe(device, params, **context)
    except cl.Error as e:
        return {"ok": False, "reason": f"launch failed: {e}"}
    except ProbeFailed as e:
        return {"ok": False, "reason": str(e)}
    if fault == "wrong":
        error = max(error, 1.0)
    if not error <= TOLERANCE:
        return {"ok": False, "reason": f"computes wrong: relative error {error:.3g} on a "
                                       f"tiny input against numpy"}
    return {"ok": True}


def main():
    replies = os.fdopen(int(settings.prover_reply_fd()), "w")
    try:
        devices = {d.fingerprint: d for d in list_devices()}
    except HetclError:  # no platform here: every request is answered "unavailable"
        devices = {}
    for line in sys.stdin:
        try:
            reply = prove(json.loads(line), devices)
        except Exception as e:  # a fault of the prover itself, not a verdict on the variant
            reply = {"unavailable": f"the prover failed ({type(e).__name__}: {e})"}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()

