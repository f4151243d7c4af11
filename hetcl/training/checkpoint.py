"""Checkpoints: a directory with weights-<n>.npz (parameters), optim-<n>.npz (optimizer
buffers) and meta.json. meta.json holds the run (model, configuration, data set identity), the
progress of the last save (epoch, step, history, the interrupted epoch's running totals) with the
names and checksums of its two arrays files, and under "best" the same for the save with the
highest test accuracy. "best" names the files of the save it was, so keeping it costs no copy.

A save writes the new arrays files under new names, then replaces meta.json atomically
(temporary file + rename), and only then deletes the files neither "last" nor "best" names: a
crash at any moment - SIGKILL included - leaves meta.json naming complete, matching sets.

A checkpoint is data, never instructions: nothing is pickled, file names are checked against
the one pattern hetcl writes before anything is read or deleted, and every array's name, shape
and dtype is checked against the model before it reaches a device (check_arrays).
"""
import hashlib
import json
import os
import re
import zipfile

import numpy as np

from ..atomic import write_atomically
from ..errors import HetclError
from ..model.optim import split_key, state_key

FORMAT = 3
# format 1: the same files, no "best", no configuration; formats 1 and 2: optim-N.npz holds
# SGD momentum keyed by the parameter's name alone (read as optim.state_key("momentum", name))
READS = (1, 2, 3)
FILE_NAME = re.compile(r"(weights|optim)-[0-9]{1,12}\.npz")
TEMP_PREFIX = ".tmp-"


class CheckpointError(HetclError):
    pass


def _atomic_write(path, write):
    write_atomically(path, write, prefix=TEMP_PREFIX, durable=True)


def _remove(path):
    try:
        os.remove(path)
    except OSError:
        pass


def _digest(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _save_number(name):
    return int(name.rsplit("-", 1)[1].split(".")[0])


def referenced(meta):
    """The arrays files a (checked) meta names, under "last" and "best"."""
    names = set(meta.get("files", {}).values())
    names |= set((meta.get("best") or {}).get("files", {}).values())
    return names


def _check_meta(meta, where):
    """Refuse a meta.json whose file names are not hetcl's own (a path, '..', another file)."""
    entries = [meta.get("files", {})] + [(meta.get("best") or {}).get("files", {})]
    for files in entries:
        if not isinstance(files, dict):
            raise CheckpointError(f"checkpoint {where} is corrupt (its file list is not a "
                                  f"mapping); delete it or resume from another")
        for kind, name in files.items():
            if kind not in ("weights", "optim") or not isinstance(name, str) or \
                    not FILE_NAME.fullmatch(name) or not name.startswith(kind):
                raise CheckpointError(f"checkpoint {where} names the file {name!r} as "
                                      f"{kind!r}: hetcl writes only weights-N.npz and "
                                      f"optim-N.npz inside the directory; refusing it")


def read_meta(directory):
    """-> the checked meta.json of a checkpoint directory. One-line CheckpointError if missing,
    corrupt, of an unknown format or naming files that are not its own."""
    path = os.path.join(directory, "meta.json")
    if not os.path.isfile(path):
        raise CheckpointError(f"no checkpoint in {directory} (meta.json missing); train with "
                              f"--checkpoint {directory} first")
    try:
        with open(path) as f:
            meta = json.load(f)
    except (OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path} is corrupt ({e}); delete it or resume "
                              f"from another checkpoint") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"checkpoint {path} is corrupt (not a JSON object)")
    if meta.get("format") not in READS:
        raise CheckpointError(f"checkpoint {directory} has format {meta.get('format')}, this "
                              f"hetcl reads formats {', '.join(map(str, READS))}")
    _check_meta(meta, path)
    return meta


def _write_arrays(directory, n, params, optim_state):
    """weights-n.npz and optim-n.npz -> ({kind: name}, {name: sha256}); on any error the files
    of this save are removed again (no stray files)."""
    files, digests = {}, {}
    try:
        for kind, arrays in (("weights", params), ("optim", optim_state)):
            name = f"{kind}-{n}.npz"
            path = os.path.join(directory, name)
            files[kind] = name
            _atomic_write(path, lambda f, a=arrays: np.savez(f, **a))
            digests[name] = _digest(path)
    except BaseException:
        for name in files.values():
            _remove(os.path.join(directory, name))
        raise
    return files, digests


def save(directory, params, optim_state, meta, best=False):
    """Save params and optimizer buffers with meta as the directory's last save; best=True
    makes it the best one too. Raises OSError (disk full, no permission) with nothing changed."""
    os.makedirs(directory, exist_ok=True)
    previous = read_meta(directory) if os.path.isfile(
        os.path.join(directory, "meta.json")) else {}
    for name in os.listdir(directory):  # from a run killed mid-write (the caller holds the lock)
        if name.startswith(TEMP_PREFIX):
            _remove(os.path.join(directory, name))
    n = 1 + max([_save_number(v) for v in referenced(previous)] or [0])
    files, digests = _write_arrays(directory, n, params, optim_state)
    meta = dict(meta, format=FORMAT, files=files, sha256=digests)
    meta["best"] = {"files": files, "sha256": digests, "epoch": meta.get("epoch"),
                    "step": meta.get("step"), "score": meta.get("score")} \
        if best else previous.get("best")
    try:
        _atomic_write(os.path.join(directory, "meta.json"),
                      lambda f: f.write(json.dumps(meta, indent=2).encode()))
    except BaseException:
        for name in files.values():
            _remove(os.path.join(directory, name))
        raise
    for name in referenced(previous) - referenced(meta):  # names checked by read_meta
        _remove(os.path.join(directory, name))


def _load_npz(path):
    try:
        with np.load(path, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise CheckpointError(f"checkpoint file {path} is corrupt ({e}); delete the checkpoint "
                              f"directory or resume from another") from None


def _load_set(directory, entry):
    out = []
    for kind in ("weights", "optim"):
        name = entry.get("files", {}).get(kind)
        path = os.path.join(directory, name or f"{kind}.npz")
        if not name or not os.path.isfile(path):
            raise CheckpointError(f"checkpoint {directory} is incomplete: the {kind} file "
                                  f"{name} is missing")
        if _digest(path) != entry.get("sha256", {}).get(name):
            raise CheckpointError(f"checkpoint file {path} does not match meta.json (corrupt or "
                                  f"from another run); delete the checkpoint directory")
        out.append(_load_npz(path))
    return out


def load(directory, which="last"):
    """-> (params, optim_state, meta) of the last save or of the best one. One-line
    CheckpointError if missing or corrupt. A save that lands while this reads (another process
    evaluating a running training) is met by reading meta.json once more."""
    for attempt in range(2):
        meta = read_meta(directory)
        entry = meta if which == "last" else meta.get("best")
        if entry is None:
            raise CheckpointError(f"checkpoint {directory} has no best save (it predates "
                                  f"them); use the last one")
        try:
            params, optim_state = _load_set(directory, entry)
            if meta["format"] < 3:
                optim_state = {state_key("momentum", k): v for k, v in optim_state.items()}
            return params, optim_state, meta
        except CheckpointError:
            if attempt or read_meta(directory) == meta:
                raise


def check_arrays(params, optim_state, shapes, where):
    """Refuse arrays that do not fit the model before they reach a device: shapes {name: shape}
    of the model's parameters; the optimizer's buffers are empty or, for each of their kinds
    (optim.state_key), one per parameter."""
    def check(arrays, what, shape_of=shapes):
        missing, unknown = sorted(set(shape_of) - set(arrays)), sorted(set(arrays) - set(shape_of))
        if missing or unknown:
            raise CheckpointError(f"checkpoint {where}: its {what} do not fit the model "
                                  f"(missing {missing}, unknown {unknown})")
        for name, a in arrays.items():
            if tuple(a.shape) != tuple(shape_of[name]) or a.dtype != np.float32:
                raise CheckpointError(f"checkpoint {where}: {what} {name} is {a.dtype} "
                                      f"{tuple(a.shape)}, the model needs float32 "
                                      f"{tuple(shape_of[name])}")
            if not np.isfinite(a).all():
                raise CheckpointError(f"checkpoint {where}: {what} {name} holds NaN or Inf; "
                                      f"resume from another checkpoint")
    check(params, "parameters")
    if optim_state:
        kinds = sorted({split_key(k)[0] for k in optim_state})
        check(optim_state, "optimizer buffers",
              {state_key(kind, name): shape for kind in kinds for name, shape in shapes.items()})
