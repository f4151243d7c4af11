"""OpenCL device discovery, the Device (context and queues) and the device-selection parser.

A Device is one OpenCL device with its context (its own, or one shared with the devices of its
platform that a Runtime drives together: share_contexts) and in-order profiling queues. Everything the
kernels need to know about a device is in two places:
  * ``profile``  - plain facts read from the driver (a dict, JSON-serialisable);
  * ``features`` - flags derived from the profile by ``features(profile)``. Templates and kernel
    defaults test these flags, never vendor or device names; a device quirk becomes a flag
    (device_profile.py reads both).
"""
import functools

import pyopencl as cl

from ..errors import DeviceSelectionError, NoPlatformError
from .device_profile import DEVICE_KINDS, features, fingerprint, read_profile
from .host_cpu import same_host_cpu, say_left_out

NO_PLATFORM_HELP = (
    "no OpenCL platform found: install one - `pip install hetcl[pocl]` gives a CPU device, "
    "or install your GPU vendor's OpenCL driver")


class Device:
    """One OpenCL device with its context and two in-order queues (main and copy).

    Profiling: every command's start and end times are recorded while ``profiling`` is True (the
    default: the tuner and the benchmarks read them). It costs host time - on NVIDIA's driver
    a kernel launch costs markedly more on a profiling queue (tools/bench_launch.py;
    docs/benchmarks.md, 'Several devices at once') - so the runtime turns it off for the
    training steps it does not measure. Each role (main, copy) then
    uses a second queue without profiling; a role switches queues lazily, at its next command,
    behind a barrier on the other queue's last command, so that the role stays in order and
    switching back and forth between two commands costs nothing."""

    def __init__(self, cl_device, profile):
        self.cl_device = cl_device
        self.profile = profile
        self._features = None  # the feature flags (property features)
        self.fingerprint = fingerprint(profile)
        self._context = None
        self._queues = {}  # (role, profiled) -> cl.CommandQueue
        self._active = {"main": True, "copy": True}  # profiled? of each role's last queue used
        self.profiling = True
        self._retired = []  # events of host transfers kept until they complete (retire())
        self.last_kernel = None  # event of the latest kernel enqueued (see record())
        self.kernel_events = None  # while a list: every kernel event (the scheduler's busy time)

    index = property(lambda self: self.profile["index"])
    name = property(lambda self: self.profile["name"])
    kind = property(lambda self: self.profile["kind"])

    @property
    def features(self):
        """The feature flags, with the proven vector width (found on first use; cached on disk
        per driver, so a device that is only listed proves nothing)."""
        if self._features is None:
            from ..codegen.vector_probe import vector_width
            self._features = features(self.profile)  # (the probe renders with these)
            self._features = features(dict(self.profile, vector_width=vector_width(self)))
        return self._features

    @features.setter
    def features(self, flags):
        self._features = flags

    @property
    def context(self):
        if self._context is None:
            self._context = cl.Context([self.cl_device])
        return self._context

    def _role_queue(self, role):
        want = self.profiling
        if self._active[role] == want:  # the common case, once per command: no switch
            queue = self._queues.get((role, want))
            if queue is not None:
                return queue
        key = (role, want)
        if key not in self._queues:
            props = cl.command_queue_properties.PROFILING_ENABLE if want else 0
            self._queues[key] = cl.CommandQueue(self.context, self.cl_device, properties=props)
        if self._active[role] != want:
            old = self._queues.get((role, self._active[role]))
            if old is not None:
                marker = cl.enqueue_marker(old)
                old.flush()  # an event waited on from another queue must be flushed (spec)
                cl.enqueue_barrier(self._queues[key], wait_for=[marker])
            self._active[role] = want
        return self._queues[key]

    @property
    def queue(self):
        """The in-order queue the kernels run on."""
        return self._role_queue("main")

    @property
    def copy_queue(self):
        """A second in-order queue for gradient transfers, so that copies overlap the kernels
        of the main queue (drivers run the two on separate engines)."""
        return self._role_queue("copy")

    def retire(self, *events):
        """Keep the events of non-blocking host transfers until they have completed. pyopencl
        returns a NannyEvent for them, which holds the host array and, when dropped, *waits*
        for the transfer: a non-blocking upload whose event is dropped at once blocks the
        host until everything queued before it has run (docs/benchmarks.md, 'Several devices
        at once'). Completed events are let go now and then."""
        self._retired.extend(e for e in events if e is not None)
        if len(self._retired) > 64:
            done = cl.command_execution_status.COMPLETE
            self._retired = [e for e in self._retired if e.command_execution_status != done]

    def record(self, event):
        """Called by codegen with each kernel it enqueues."""
        self.last_kernel = event
        if self.kernel_events is not None:
            self.kernel_events.append(event)
        return event

    def __repr__(self):
        return f"Device({self.index}: {self.name} [{self.kind}])"

    def __str__(self):
        return f"device {self.index} ({self.name}, {self.profile['platform']})"


def share_contexts(devices, force=False):
    """Give the devices of each platform among `devices` one shared context, so that each
    device's queues can wait on the others' events: a gradient copy read back from one GPU is
    uploaded to the next as soon as the read is done, with no host round trip in between
    (comm.py). Drivers allocate a buffer's memory on the device that first uses it, so sharing
    costs no memory on the others. A device that already has a context (it has been used in
    this process) keeps it, and the exchange then goes through the host as across platforms;
    so does one whose features say no (force: share anyway, for tests)."""
    groups = {}
    for d in devices:
        if d._context is None and (force or d.features["shared_context"]):
            groups.setdefault(d.profile["platform_index"], []).append(d)
    for group in groups.values():
        if len(group) > 1:
            context = cl.Context([d.cl_device for d in group])
            for d in group:
                d._context = context


def event_seconds(event, start=None):
    """Profiled duration of a finished event in seconds, or from `start`'s start to `event`'s
    end (both events on one device: its queues share one clock)."""
    return (event.profile.end - (start or event).profile.start) * 1e-9


@functools.lru_cache(maxsize=1)
def _discover():
    try:
        platforms = cl.get_platforms()
    except cl.Error as e:
        if "PLATFORM_NOT_FOUND" in str(e) or "-1001" in str(e):
            raise NoPlatformError(NO_PLATFORM_HELP) from None
        raise
    devices = []
    for p_idx, platform in enumerate(platforms):
        try:
            cl_devices = platform.get_devices()
        except cl.Error:  # a platform with no devices
            continue
        for d_idx, dev in enumerate(cl_devices):
            profile = read_profile(platform, dev, len(devices), p_idx, d_idx)
            devices.append(Device(dev, profile))
    if not devices:
        raise NoPlatformError(NO_PLATFORM_HELP)
    return tuple(devices)


def list_devices():
    """Every OpenCL device over all platforms, numbered in platform order."""
    return list(_discover())


def describe(devices):
    return "; ".join(f"{d.profile['index']} = {d.profile['platform_index']}:"
                     f"{d.profile['device_index']} {d.profile['name']} ({d.profile['kind']})"
                     for d in devices)


def parse_selection(spec, devices):
    """Pick devices by a spec string. Works on anything with a ``profile`` dict, so it is pure.

    Tokens, comma separated, union in order of first mention: ``all``, ``cpu``, ``gpu`` (igpu +
    dgpu), ``igpu``, ``dgpu``, ``accelerator``, an index ``2`` (as `hetcl devices` numbers them),
    or ``P:D`` (device D of platform P).
    """
    if isinstance(spec, int):
        spec = str(spec)
    tokens = [t.strip().lower() for t in str(spec or "").split(",") if t.strip()]
    duplicates = same_host_cpu(devices)
    if not tokens:
        raise DeviceSelectionError(
            f"empty device selection; use all, cpu, gpu, igpu, dgpu, indices like 0,2 or P:D. "
            f"Devices: {describe(devices)}")
    chosen = []
    for tok in tokens:
        if tok in ("all", "cpu") and duplicates:
            left_out = [id(dup) for dup, _ in duplicates]
            matched = [d for d in devices if id(d) not in left_out
                       and (tok == "all" or d.profile["kind"] == "cpu")]
            say_left_out(duplicates)
        elif tok == "all":
            matched = list(devices)
        elif tok == "gpu":
            matched = [d for d in devices if d.profile["kind"] in ("igpu", "dgpu")]
        elif tok in DEVICE_KINDS:
            matched = [d for d in devices if d.profile["kind"] == tok]
        elif tok.isdigit():
            matched = [d for d in devices if d.profile["index"] == int(tok)]
        elif ":" in tok and all(p.isdigit() for p in tok.split(":", 1)):
            p, i = (int(x) for x in tok.split(":", 1))
            matched = [d for d in devices
                       if d.profile["platform_index"] == p and d.profile["device_index"] == i]
        else:
            raise DeviceSelectionError(
                f"unknown device selector {tok!r}: use all, cpu, gpu, igpu, dgpu, indices like "
                f"0,2 or P:D. Devices: {describe(devices)}")
        if not matched:
            raise DeviceSelectionError(
                f"no device matches {tok!r}. Devices: {describe(devices)}")
        chosen.extend(d for d in matched if d not in chosen)
    return chosen


def select_devices(spec="all"):
    """Devices for a spec string (see parse_selection), a Device, or a list of Devices."""
    if isinstance(spec, Device):
        return [spec]
    if isinstance(spec, (list, tuple)) and all(isinstance(d, Device) for d in spec):
        if not spec:
            raise DeviceSelectionError("empty device list")
        return list(spec)
    return parse_selection(spec, list_devices())

