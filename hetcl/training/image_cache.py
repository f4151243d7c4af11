"""The cache of a decoded image folder (image_folder.py): the images and labels as
<token>-x.npy and <token>-y.npy beside manifest.json, which holds the key (cache version, image
size, class names and the listing of every image file) and what the arrays hold: their shape,
the image count of each split and the skipped files. The token is a hash of the key. The cache
lives in DIR/.hetcl-cache/ or, where DIR is read-only, in
$XDG_CACHE_HOME/hetcl/datasets/<sha256 of DIR's path>/. A damaged or unwritable cache only
costs decoding again. numpy only."""
import hashlib
import json
import os
import time
import warnings

import numpy as np

from .data import DataWarning

CACHE_DIR = ".hetcl-cache"
MANIFEST = "manifest.json"
STALE_TMP_S = 3600  # a temp file this old was left by a crashed writer


def cache_dir(directory):
    """DIR/.hetcl-cache where DIR is writable, else a folder under $XDG_CACHE_HOME."""
    local = os.path.join(directory, CACHE_DIR)
    if os.access(directory, os.W_OK) and (not os.path.exists(local)
                                          or os.access(local, os.W_OK)):
        return local
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    key = hashlib.sha256(os.path.abspath(directory).encode()).hexdigest()
    return os.path.join(base, "hetcl", "datasets", key)


def read_cache(where, key, splits):
    """(images, labels, manifest) when ``where`` holds the cache of ``key``, else None.
    ``splits``: the names the manifest's image counts are given by."""
    if not os.path.exists(os.path.join(where, MANIFEST)):
        return None
    try:
        with open(os.path.join(where, MANIFEST), "rb") as f:
            manifest = json.loads(f.read())
        if {k: manifest.get(k) for k in key} != key:
            return None  # another listing, image size or format: stale, not damaged
        n, token = sum(int(manifest["counts"][s]) for s in splits), manifest["token"]
        x = np.load(os.path.join(where, f"{token}-x.npy"), allow_pickle=False)
        y = np.load(os.path.join(where, f"{token}-y.npy"), allow_pickle=False)
        if x.dtype != np.uint8 or x.shape != (n, *manifest["shape"]) or y.shape != (n,):
            raise ValueError(f"arrays {x.dtype} {x.shape} and {y.shape} do not fit the manifest")
        manifest["skipped"] = [(str(rel), str(reason)) for rel, reason in manifest["skipped"]]
        return x, y, manifest
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        warnings.warn(f"the dataset cache in {where} is damaged ({' '.join(str(e).split())}): "
                      f"rebuilding it", DataWarning, stacklevel=3)


def _atomic_write(path, write):
    """Write ``path`` through a temp file renamed over it: readers see the old or the new."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_cache(where, manifest, x, y):
    """The arrays first, then the manifest that names them (renamed last, so a crash leaves
    the previous cache or none); then the files of other caches go. Named by the token, a hash
    of the key, so processes building the same cache at once write the same files."""
    token = manifest["token"]
    try:
        os.makedirs(where, exist_ok=True)
        for part, a in (("x", x), ("y", y)):
            _atomic_write(os.path.join(where, f"{token}-{part}.npy"), lambda f, a=a: np.save(f, a))
        _atomic_write(os.path.join(where, MANIFEST), lambda f: f.write(json.dumps(manifest)
                                                                        .encode()))
        for name in os.listdir(where):
            path = os.path.join(where, name)
            if (name.endswith(".npy") and not name.startswith(token)) or (
                    name.endswith(".tmp") and time.time() - os.path.getmtime(path) > STALE_TMP_S):
                os.remove(path)
    except OSError as e:
        warnings.warn(f"cannot write the dataset cache in {where} ({e.strerror or e}): the "
                      f"images will be decoded again next time", DataWarning, stacklevel=3)
