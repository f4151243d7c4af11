"""Keeping the host thread that feeds a GPU on one CPU core while it trains or benchmarks.

A small model's step on a GPU is bound by the host: the thread that enqueues it spends as much
CPU time as the step takes. Left to the OS, that thread moves between cores and its step time
jumps from one window to the next, so that two identical runtimes differ in the same round;
pinned to one core, its windows agree (docs/benchmarks.md, "Several devices at once").

Only the calling thread is pinned (Linux: the affinity of pid 0 is the calling thread's).
Threads that exist keep their cores: PoCL starts its workers when the platform is listed, a
GPU driver its own with the context - so the devices' contexts are made before pinning.
Threads started while pinned would inherit the one core: nothing is pinned under MPI, whose
sums run on a thread of their own (mpi.py), and a helper thread of the host's own (a streamed
data set's row gather: resident_sets.py) moves itself to the other cores (leave_pinned_core).

HETCL_PIN_HOST: unset or "auto" - pin where a device's features ask for it ("pin_host"), to
the last core the process may use; "off" - never; a number - that core.
"""
import contextlib
import os

from .. import settings
from ..errors import HetclError

# While a thread is pinned: the cores the process may use but that one ("others"), for the
# helper threads started meanwhile.
_pinned = {"others": None}


def chosen_core(allowed, setting=None):
    """The core to pin to, out of the set the thread may run on; None: do not pin."""
    setting = settings.pin_host() if setting is None else setting
    setting = setting.strip().lower()
    if setting == "off":
        return None
    if setting in ("", "auto"):
        return max(allowed) if len(allowed) > 1 else None
    try:
        core = int(setting)
    except ValueError:
        core = None
    if core not in allowed:
        raise HetclError(f"HETCL_PIN_HOST={setting!r}: give off, auto or one of the cores "
                         f"this process may run on ({_ranges(allowed)})")
    return core


def _ranges(cores):
    """{0, 1, 2, 5} -> "0-2,5" (as taskset writes them)."""
    runs = []
    for c in sorted(cores):
        if runs and c == runs[-1][1] + 1:
            runs[-1][1] = c
        else:
            runs.append([c, c])
    return ",".join(f"{a}-{b}" if b > a else f"{a}" for a, b in runs)


@contextlib.contextmanager
def host_thread_pinned(devices, world=None):
    """While inside, the calling thread runs on one core, where one of `devices` asks for it
    (and not under MPI). Yields the core, or None where nothing was pinned; the thread's
    cores are given back on the way out."""
    core = None
    if world is None and hasattr(os, "sched_setaffinity") and \
            any(d.features.get("pin_host") for d in devices):
        before = os.sched_getaffinity(0)
        core = chosen_core(before)
    if core is not None:
        for d in devices:
            d.context  # noqa: B018  (the driver's threads start with it: they keep every core)
        try:
            os.sched_setaffinity(0, {core})
        except OSError:  # (a container's cpuset that changed under us): run as the OS places it
            core = None
    if core is None:
        yield None
        return
    _pinned["others"] = (before - {core}) or None
    try:
        yield core
    finally:
        _pinned["others"] = None
        os.sched_setaffinity(0, before)


def leave_pinned_core():
    """Run by a helper thread as it starts: where it was started by a pinned thread (and so
    inherits its one core), it moves to the process's other cores, so that it does not take
    turns with the thread that feeds the devices."""
    if _pinned["others"]:
        try:
            os.sched_setaffinity(0, _pinned["others"])
        except OSError:
            pass  # (a container's cpuset that changed under us): stay where it is
