"""CPU devices that two OpenCL platforms give for the same cores.

A machine with both Debian's PoCL (pocl-opencl-icd) and PyPI's (the pyopencl wheel's, with
pocl-binary-distribution) lists its CPU twice. Training on both would run two drivers on one
set of cores, so device selection (device.parse_selection) keeps the CPU devices of the
platform with the newest driver and leaves the others out, with a line saying so.
"""
import warnings

from ..errors import DeviceWarning


def _version(text):
    """The leading numbers of a driver version ("3.1+debian" -> (3, 1)), for comparisons."""
    numbers = []
    for part in text.replace("-", ".").replace("+", ".").split("."):
        if not part.isdigit():
            break
        numbers.append(int(part))
    return tuple(numbers)


def same_host_cpu(devices):
    """[(device, the device it duplicates)] for CPU devices that a second OpenCL platform gives
    for the same cores (e.g. Debian's PoCL and PyPI's, both installed): the CPU devices of the
    platform with the newest driver stay (the first listed on a tie), those of the others are
    duplicates. Training on both would run two drivers on one set of cores."""
    cpus = [d for d in devices if d.profile["kind"] == "cpu"]
    platforms = list(dict.fromkeys(d.profile["platform_index"] for d in cpus))
    if len(platforms) < 2:
        return []
    best = max(platforms, key=lambda p: (
        max(_version(d.profile["driver_version"]) for d in cpus
            if d.profile["platform_index"] == p), -platforms.index(p)))
    kept = next(d for d in cpus if d.profile["platform_index"] == best)
    return [(d, kept) for d in cpus if d.profile["platform_index"] != best]


_said = set()


def say_left_out(duplicates):
    """One line per duplicate CPU device, once per process."""
    for dup, kept in duplicates:
        key = (dup.profile["platform"], dup.profile["driver_version"], dup.profile["name"])
        if key not in _said:
            _said.add(key)
            warnings.warn(
                f"device {dup.profile['index']} ({dup.profile['name']}, driver "
                f"{dup.profile['driver_version']}) is the same CPU as device "
                f"{kept.profile['index']} (driver {kept.profile['driver_version']}) on another "
                f"OpenCL platform: left out (name it in --devices to use it instead)",
                DeviceWarning, stacklevel=4)
