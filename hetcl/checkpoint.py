"""Checkpoints: a directory with weights.npz (parameters), optim.npz (optimizer buffers) and
meta.json (model name, input shape, epoch, step, seed, optimizer hyper-parameters, metrics).

Nothing is pickled (np.load(allow_pickle=False)). Every file is written to a temporary name in
the same directory and renamed over the old one, meta.json last: a crash at any moment leaves
the previous complete checkpoint or the new one. meta.json records a checksum of both arrays
files, so a checkpoint whose files do not belong together is detected.
"""
import hashlib
import json
import os
import tempfile
import zipfile

import numpy as np

from .errors import HetclError

FORMAT = 1


class CheckpointError(HetclError):
    pass


def _atomic_write(path, write):
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def save(directory, params, optim_state, meta):
    os.makedirs(directory, exist_ok=True)
    files = {"weights.npz": params, "optim.npz": optim_state}
    digests = {}
    for name, arrays in files.items():
        path = os.path.join(directory, name)
        _atomic_write(path, lambda f, a=arrays: np.savez(f, **a))
        digests[name] = _digest(path)
    meta = dict(meta, format=FORMAT, sha256=digests)
    _atomic_write(os.path.join(directory, "meta.json"),
                  lambda f: f.write(json.dumps(meta, indent=2).encode()))


def _load_npz(path):
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise CheckpointError(f"checkpoint file {path} is corrupt ({e}); delete the checkpoint "
                              f"directory or resume from another") from None


def load(directory):
    """-> (params, optim_state, meta). One-line CheckpointError if missing or corrupt."""
    meta_path = os.path.join(directory, "meta.json")
    if not os.path.isfile(meta_path):
        raise CheckpointError(f"no checkpoint in {directory} (meta.json missing); train with "
                              f"--checkpoint {directory} first")
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {meta_path} is corrupt ({e}); delete it or resume "
                              f"from another checkpoint") from None
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"checkpoint {directory} has format {meta.get('format')}, this "
                              f"hetcl reads format {FORMAT}")
    out = []
    for name in ("weights.npz", "optim.npz"):
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            raise CheckpointError(f"checkpoint {directory} is incomplete: {name} is missing")
        if _digest(path) != meta.get("sha256", {}).get(name):
            raise CheckpointError(f"checkpoint file {path} does not match meta.json (corrupt or "
                                  f"from another run); delete the checkpoint directory")
        out.append(_load_npz(path))
    return out[0], out[1], meta
