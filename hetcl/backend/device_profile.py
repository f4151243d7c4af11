"""What hetcl knows of a device, read once from its driver: the profile (plain facts, a
JSON-serialisable dict), the feature flags derived from it (what templates and kernel defaults
test, never vendor or device names: a device quirk becomes a flag here) and the fingerprint
(the device and its compiler: binaries and tuning results are valid only for the same one)."""
import hashlib
import json

import pyopencl as cl

DEVICE_KINDS = ("cpu", "igpu", "dgpu", "accelerator")


def _kind(dev):
    if dev.type & cl.device_type.CPU:
        return "cpu"
    if dev.type & cl.device_type.GPU:
        try:
            unified = bool(dev.host_unified_memory)
        except cl.Error:
            unified = False
        return "igpu" if unified else "dgpu"
    return "accelerator"


def read_profile(platform, dev, index, platform_index, device_index):
    def get(attr, default=None):
        try:
            return getattr(dev, attr)
        except (cl.Error, AttributeError):
            return default

    local_type = get("local_mem_type", cl.device_local_mem_type.GLOBAL)
    return {
        "index": index,
        "platform_index": platform_index,
        "device_index": device_index,
        "platform": platform.name.strip(),
        "name": dev.name.strip(),
        "vendor": dev.vendor.strip(),
        "kind": _kind(dev),
        "compute_units": dev.max_compute_units,
        "clock_mhz": get("max_clock_frequency", 0),
        "global_mem_bytes": dev.global_mem_size,
        # the cache in front of global memory (a CPU's last-level cache; 0: not reported)
        "global_mem_cache_bytes": get("global_mem_cache_size", 0),
        "max_alloc_bytes": dev.max_mem_alloc_size,
        "local_mem_bytes": dev.local_mem_size,
        "local_mem_dedicated": local_type == cl.device_local_mem_type.LOCAL,
        "max_work_group_size": dev.max_work_group_size,
        "max_work_item_sizes": list(dev.max_work_item_sizes),
        "fp64": bool(get("double_fp_config", 0)),
        "host_unified_memory": bool(get("host_unified_memory", False)),
        "preferred_vector_width_float": get("preferred_vector_width_float", 1),
        "driver_version": dev.driver_version.strip(),
        "device_version": dev.version.strip(),
        "extensions": sorted(dev.extensions.split()),
    }


def features(profile):
    """Flags the templates and kernel defaults test. Derived only from the profile."""
    return {
        # Dedicated on-chip local memory (GPUs). Where local memory is emulated in global memory
        # (CPUs), tiling through it only adds copies: the caches do that job.
        "local_memory": profile["local_mem_dedicated"],
        # Work-items are lanes of a SIMD machine that share one instruction stream (GPU warps);
        # on CPUs PoCL turns a work-group into loops that it vectorises across work-items.
        "simt": profile["kind"] in ("igpu", "dgpu"),
        # Host and device share memory: buffers can be zero-copy (CPU, integrated GPU).
        "unified_memory": profile["kind"] in ("cpu", "igpu") or profile["host_unified_memory"],
        "fp64": profile["fp64"],
        "max_work_group_size": profile["max_work_group_size"],
        "local_mem_bytes": profile["local_mem_bytes"],
        # Devices of one platform may share a context, so that a command on one waits on
        # another's events (share_contexts). Only GPUs: PoCL's CPU drivers can hang when a
        # command waits on an event of another device of the context (pocl/pocl#1177; seen
        # here with "pthread basic"), and a CPU device is never the one the host keeps waiting.
        "shared_context": profile["kind"] in ("igpu", "dgpu"),
        # The host thread feeds the device kernel by kernel, and a small model's step is bound
        # by that thread: it gains from staying on one core (affinity.py). A CPU device's own
        # workers compute; the thread that enqueues mostly waits.
        "pin_host": profile["kind"] != "cpu",
        # The widest float vector the device's compiler really handles (proven by building and
        # running a probe kernel: codegen/vector_probe.py; a driver's preferred width is only
        # a claim). CPU defaults cap their vector widths at it. Until proven: 16.
        "vector_width": profile.get("vector_width", 16),
    }


def fingerprint(profile):
    """Identifies a device *and its compiler*: binaries and tuning results are valid only for
    the same one. The driver version is part of it, so a driver update rebuilds everything."""
    keys = ("platform", "name", "vendor", "driver_version", "device_version", "compute_units")
    blob = json.dumps({k: profile[k] for k in keys}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]
