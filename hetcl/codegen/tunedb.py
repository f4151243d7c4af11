"""The tuning DB: the best parameters found per (device, kernel, shape bucket).

JSON, layout:
  {"format": 1,
   "devices": {<fingerprint>: {"name": .., "vendor": .., "kind": .., "driver": ..,
                               "kernels": {<kernel>: {<bucket>: {"params": {..},
                                                                  "ms": .., "default_ms": ..}}}}}}
A bucket is a string naming the shape class (GEMM: transposes and each of m, n, k rounded up to
a power of two), so one entry serves the shapes near the one tuned.

Lookup order: the user's DB (cache dir, written by `hetcl tune`), then the DB shipped with the
package (hetcl/codegen/tuned.json); in each, the device itself (fingerprint: same device, same
driver), then any device of the same vendor and kind; otherwise None (the kernel's defaults).
The DB is a cache: a corrupt or unreadable file is ignored with a warning, never fatal.
"""
import contextlib
import json
import os
import warnings

from .cache import cache_dir, write_json

FORMAT = 1
SHIPPED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "tuned.json")


def user_path():
    return os.path.join(cache_dir(), "tuning.json")


def _empty():
    return {"format": FORMAT, "devices": {}}


def read(path):
    try:
        with open(path) as f:
            data = json.load(f)
        if data.get("format") != FORMAT or not isinstance(data.get("devices"), dict):
            raise ValueError(f"not a format-{FORMAT} tuning DB")
        return data
    except FileNotFoundError:
        return _empty()
    except (OSError, ValueError) as e:
        warnings.warn(f"ignoring the tuning DB {path}: {e} (run `hetcl tune` to rebuild it)",
                      stacklevel=3)
        return _empty()


def write(path, data):
    write_json(path, data)  # atomic: an interrupted tune leaves the previous complete DB


def pow2(x):
    p = 1
    while p < x:
        p *= 2
    return p


def gemm_bucket(m, n, k, trans_a, trans_b, batch):
    return f"{'T' if trans_a else 'N'}{'T' if trans_b else 'N'}-{pow2(m)}x{pow2(n)}x{pow2(k)}" \
           f"{'-batched' if batch > 1 else ''}"


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
            hit = own and own["kernels"].get(kernel, {}).get(bucket)
            if hit:
                return hit["params"], True
        p = device.profile
        for db in self.dbs:
            for entry in db["devices"].values():
                if entry.get("vendor") == p["vendor"] and entry.get("kind") == p["kind"]:
                    hit = entry["kernels"].get(kernel, {}).get(bucket)
                    if hit:
                        return hit["params"], False
        return None, False


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
