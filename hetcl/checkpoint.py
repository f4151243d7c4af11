"""Checkpoints: a directory with weights-<n>.npz (parameters), optim-<n>.npz (optimizer
buffers) and meta.json (model name, input shape, epoch, step, seed, metrics, and the names and
checksums of the two arrays files of save number n).

Nothing is pickled (np.load(allow_pickle=False)). A save writes the new arrays files under new
names, then replaces meta.json atomically (temporary file + rename), and only then deletes the
previous save's files: a crash at any moment - SIGKILL included - leaves meta.json naming a
complete, matching set, either the old one or the new one.
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
    meta_path = os.path.join(directory, "meta.json")
    previous = {}
    if os.path.isfile(meta_path):
        try:
            with open(meta_path) as f:
                previous = json.load(f).get("files", {})
        except (OSError, ValueError):
            previous = {}
    n = 1 + max([int(v.rsplit("-", 1)[1].split(".")[0]) for v in previous.values()
                 if "-" in v] or [0])
    files, digests = {}, {}
    for kind, arrays in (("weights", params), ("optim", optim_state)):
        name = f"{kind}-{n}.npz"
        path = os.path.join(directory, name)
        _atomic_write(path, lambda f, a=arrays: np.savez(f, **a))
        files[kind], digests[name] = name, _digest(path)
    meta = dict(meta, format=FORMAT, files=files, sha256=digests)
    _atomic_write(meta_path, lambda f: f.write(json.dumps(meta, indent=2).encode()))
    for name in previous.values():  # the old set is no longer referenced
        if name not in files.values():
            try:
                os.remove(os.path.join(directory, name))
            except OSError:
                pass


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
    for kind in ("weights", "optim"):
        name = meta.get("files", {}).get(kind, f"{kind}.npz")
        path = os.path.join(directory, name)
        if not os.path.isfile(path):
            raise CheckpointError(f"checkpoint {directory} is incomplete: {name} is missing")
        if _digest(path) != meta.get("sha256", {}).get(name):
            raise CheckpointError(f"checkpoint file {path} does not match meta.json (corrupt or "
                                  f"from another run); delete the checkpoint directory")
        out.append(_load_npz(path))
    return out[0], out[1], meta
