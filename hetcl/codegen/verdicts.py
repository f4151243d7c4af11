"""Proven verdicts: which kernel variants build and run right on a device and its driver.

A verdict is the outcome of proving one program (prove.py): it built and ran right in a child
process, or it did not and why. Verdicts are a cache beside the kernel binaries:

  <cache dir>/verdicts/<device fingerprint>.json =
      {"format": 1, "device": <name>, "variants": {<program key>: {"ok": bool, "reason": str,
                                                                    "template": str,
                                                                    "params": str}}}

The program key is the kernel cache's key (sha256 of fingerprint | build options | rendered
source, cache.program_key), so new template text, other parameters or a driver update each
give a new key and are proven again. The fingerprint includes the driver version: a verdict
never outlives the compiler it was found on. A corrupt or unreadable file is treated as empty
(proving again costs time, never the run); a write merges into what is on disk, atomically.
"""
import json
import os

from ..log import debug
from .cache import cache_dir, write_json

FORMAT = 1
_loaded = {}  # fingerprint -> {key: verdict}


def _path(fingerprint):
    return os.path.join(cache_dir(), "verdicts", fingerprint + ".json")


def _read(fingerprint):
    path = _path(fingerprint)
    try:
        with open(path) as f:
            data = json.load(f)
        if data.get("format") != FORMAT or not isinstance(data.get("variants"), dict):
            raise ValueError(f"not a format-{FORMAT} verdict file")
        return data["variants"]
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as e:
        debug("verdicts: ignoring %s (%s); variants are proven again", path, e)
        return {}


def _variants(fingerprint):
    key = (cache_dir(), fingerprint)  # tests switch cache dirs within one process
    if key not in _loaded:
        _loaded[key] = _read(fingerprint)
    return _loaded[key]


def lookup(device, key):
    """The verdict on program `key` for `device`, or None where it has not been proven."""
    return _variants(device.fingerprint).get(key)


def record(device, key, verdict):
    """Keep a verdict in memory and on disk (merged with what other processes wrote)."""
    variants = _variants(device.fingerprint)
    variants[key] = verdict
    merged = dict(_read(device.fingerprint), **variants)
    try:
        write_json(_path(device.fingerprint),
                   {"format": FORMAT, "device": device.name, "variants": merged})
    except OSError as e:  # a read-only or full cache dir: the next run proves again
        debug("verdicts: cannot write %s (%s)", _path(device.fingerprint), e)


def broken(device):
    """The variants proven broken on `device`: [(template, params, reason)]."""
    return [(v["template"], v["params"], v["reason"])
            for v in _variants(device.fingerprint).values() if not v["ok"]]
