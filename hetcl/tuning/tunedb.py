"""The tuning DB: the best parameters found per (device, kernel, shape bucket).

JSON, layout:
  {"format": 1,
   "devices": {<fingerprint>: {"name": .., "vendor": .., "kind": .., "driver": ..,
                               "kernels": {<kernel>: {<bucket>: {"params": {..},
                                                                  "ms": .., "default_ms": ..}}}}}}
A bucket is a string naming the shape class (buckets.py: the one schema of every kernel), so one
entry serves the shapes near the one tuned, the shards of a split batch included.

Lookup order: the user's DB (cache dir, written by `hetcl tune`), then the DB shipped with the
package (hetcl/tuning/tuned.json); in each, the device itself (fingerprint: same device, same
driver), then any device of the same vendor and kind; otherwise None (the kernel's defaults).
The DB is a cache, never fatal: a corrupt or unreadable file is ignored with a warning; so is each
malformed part of a readable one (an entry of the wrong type or with a field missing, params the
kernel's params class does not take), with one warning per file naming the first.
"""
import contextlib
import dataclasses
import importlib
import json
import os
import warnings

from ..codegen.cache import cache_dir, write_json
from . import buckets as buckets_schema

FORMAT = 1
SHIPPED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tuned.json")


def user_path():
    return os.path.join(cache_dir(), "tuning.json")


def _empty():
    return {"format": FORMAT, "devices": {}}


# The params class of each kernel the DB tunes ("module.Class" under hetcl.codegen), for checking
# entries. The kernel modules import this one, so the classes are imported when a DB is read.
_PARAMS = {"gemm": "gemm.GemmParams", "splitk": "splitk.SplitKParams",
           "im2col": "conv.Im2ColParams", "col2im": "conv.Col2ImParams",
           "bias_act": "eltwise.EltwiseParams", "act_bwd": "eltwise.EltwiseParams",
           "bias_grad": "eltwise.BiasGradParams", "conv_dx": "conv_dx.ConvDxParams",
           "maxpool_fwd": "pool.PoolParams", "maxpool_bwd": "pool.PoolParams",
           "avgpool_fwd": "avgpool.AvgPoolParams", "avgpool_bwd": "avgpool.AvgPoolParams",
           "dropout_fwd": "dropout.DropoutParams", "dropout_bwd": "dropout.DropoutParams",
           "bn_sums": "batchnorm.BatchNormSumsParams",
           "bn_bwd_sums": "batchnorm.BatchNormSumsParams",
           "bn_apply": "batchnorm.BatchNormParams", "bn_bwd_dx": "batchnorm.BatchNormParams"}


def params_class(kernel):
    """The KernelParams subclass of `kernel`'s entries, or None for a kernel not tuned here."""
    name = _PARAMS.get(kernel)
    if name is None:
        return None
    module, cls = name.rsplit(".", 1)
    return getattr(importlib.import_module(f"hetcl.codegen.{module}"), cls)


def read(path):
    """The DB at `path` less its malformed entries (one warning names them); an empty DB where
    the file is absent, or (with a warning) unreadable or not a tuning DB at all."""
    data = _load(path)
    if data is None:
        return _empty()
    data, problems = _clean(data)
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        warnings.warn(f"tuning DB {path}: {problems[0]}{more}; ignored - {_remedy(path)}",
                      stacklevel=3)
    return data


def _load(path):
    """The parsed file if its top level is a format-1 DB, else None."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if not isinstance(data, dict) or data.get("format") != FORMAT \
                or not isinstance(data.get("devices"), dict):
            raise ValueError(f"not a format-{FORMAT} tuning DB")
        return data
    except (FileNotFoundError, NotADirectoryError):  # no DB (yet), or no cache dir to hold one
        return None
    except (OSError, ValueError, RecursionError) as e:  # (RecursionError: absurdly deep JSON)
        warnings.warn(f"ignoring the tuning DB {path}: {e} (run `hetcl tune` to rebuild it)",
                      stacklevel=4)
        return None


def _remedy(path):
    if os.path.abspath(path) == os.path.abspath(SHIPPED):
        return "the DB shipped with hetcl is damaged: reinstall hetcl"
    return "`hetcl tune` rewrites it"


def _clean(data):
    """(`data` with only its well-formed device entries, kernels and buckets; what was wrong
    with each part left out). What lookups and record() read is then known to be well-formed."""
    problems = []
    devices = {}
    for fingerprint, entry in data["devices"].items():
        who = _device_label(fingerprint, entry)
        if not isinstance(entry, dict):
            problems.append(f"the entry of device {who} is malformed "
                            f"({type(entry).__name__}, not an object)")
        elif not isinstance(entry.get("kernels"), dict):
            problems.append(f"the entry of device {who} is malformed (no \"kernels\" object)")
        else:
            devices[fingerprint] = dict(entry, kernels=_clean_kernels(entry["kernels"], who,
                                                                      problems))
    return dict(data, devices=devices), problems


def _clean_kernels(kernels, who, problems):
    """The well-formed buckets of one device's kernels; each part left out adds to `problems`."""
    out = {}
    for kernel, buckets in kernels.items():
        if not isinstance(buckets, dict):
            problems.append(f"kernel '{kernel}' of device {who} is malformed "
                            f"({type(buckets).__name__}, not an object of shape buckets)")
            continue
        out[kernel] = {}
        for bucket, hit in buckets.items():
            reason = _entry_problem(kernel, hit)
            if reason:
                problems.append(f"entry '{kernel} {bucket}' for device {who} is malformed "
                                f"({reason})")
            else:  # (the first of two old buckets that share a new one stays)
                out[kernel].setdefault(buckets_schema.upgrade(kernel, bucket), hit)
    return out


def _device_label(fingerprint, entry):
    name = entry.get("name") if isinstance(entry, dict) else None
    return f"{name!r} ({fingerprint})" if isinstance(name, str) else fingerprint


def _entry_problem(kernel, hit):
    """Why a bucket's entry cannot be used, or None."""
    if not isinstance(hit, dict):
        return f"{type(hit).__name__}, not an object"
    if "params" not in hit:
        return "no \"params\""
    return _params_problem(kernel, hit["params"])


def _params_problem(kernel, params):
    """Why `params` cannot make `kernel`'s params object, or None. A name the class lacks is
    a problem, a name it has that is missing is not (the class's default fills it in)."""
    if not isinstance(params, dict):
        return f"params is {type(params).__name__}, not an object"
    for name, value in params.items():
        if type(value) is not int:  # every tunable is an integer; JSON's true/false are not
            return f"{name}={value!r} is not an integer"
    cls = params_class(kernel)
    if cls is None:  # another hetcl's kernel: never looked up here, so kept as it is
        return None
    unknown = sorted(set(params) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        return f"unknown parameter{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}"
    try:
        return cls(**params).check()
    except (TypeError, ValueError, ArithmeticError) as e:  # values its check() never expected
        return f"{cls.__name__} rejects it: {e}"


def write(path, data):
    write_json(path, data)  # atomic: an interrupted tune leaves the previous complete DB


class TuneDB:
    """Both DBs, loaded once per process (reload() after a tune)."""

    def __init__(self, paths=None):
        self.paths = paths
        self.overlay = {}  # (kernel, bucket) -> params: what-if lookups while tuning
        self.reload()

    def reload(self):
        paths = self.paths or [user_path(), SHIPPED]
        self.dbs = [read(p) for p in paths]

    def lookup(self, device, kernel, bucket):
        """The params (a dict) stored for this device, else for one of its vendor and kind,
        else None."""
        return self.find(device, kernel, bucket)[0]

    def find(self, device, kernel, bucket):
        """(params, own): the params as lookup() gives them, and whether they were stored for
        this very device (or set by overlay) rather than borrowed from another one."""
        if (kernel, bucket) in self.overlay:
            return self.overlay[kernel, bucket], True
        for db in self.dbs:
            own = db["devices"].get(device.fingerprint)
            hit = own and _entry(own["kernels"].get(kernel, {}), bucket)
            if hit:
                return hit["params"], True
        p = device.profile
        for db in self.dbs:
            for entry in db["devices"].values():
                if entry.get("vendor") == p["vendor"] and entry.get("kind") == p["kind"]:
                    hit = _entry(entry["kernels"].get(kernel, {}), bucket)
                    if hit:
                        return hit["params"], False
        return None, False


def _entry(entries, bucket):
    """The entry of the bucket, else of the nearest that serves it (buckets.py)."""
    if bucket in entries:
        return entries[bucket]
    near = buckets_schema.nearest(bucket, entries)
    return entries[near] if near else None


_db = None


def database():
    global _db
    if _db is None:
        _db = TuneDB()
    return _db


@contextlib.contextmanager
def overlay(kernel, bucket, params):
    """Inside, kernels of that bucket built on any device get `params` (a dict)."""
    db = database()
    saved = db.overlay.get((kernel, bucket))
    db.overlay[kernel, bucket] = params
    try:
        yield
    finally:
        if saved is None:
            db.overlay.pop((kernel, bucket), None)
        else:
            db.overlay[kernel, bucket] = saved


def record(device, kernel, bucket, params, ms, default_ms, path=None):
    """Add one result to the user DB (read, update, atomic write: safe to interrupt)."""
    path = path or user_path()
    data = read(path)
    p = device.profile
    entry = data["devices"].setdefault(device.fingerprint, {
        "name": p["name"], "vendor": p["vendor"], "kind": p["kind"],
        "driver": p["driver_version"], "kernels": {}})
    entry["kernels"].setdefault(kernel, {})[bucket] = {
        "params": params, "ms": round(ms, 4), "default_ms": round(default_ms, 4)}
    write(path, data)
    if _db is not None:
        _db.reload()
