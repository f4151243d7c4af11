"""Checkpoint files: a crash at any point of a save leaves a loadable, consistent checkpoint."""
import os

import numpy as np
import pytest

from hetcl.training import checkpoint


def test_crash_before_meta_keeps_the_previous_save(tmp_path, monkeypatch):
    d = str(tmp_path / "ck")
    checkpoint.save(d, {"w": np.ones(3, np.float32)}, {"m": np.zeros(3, np.float32)}, {"step": 1})
    real = checkpoint._atomic_write

    def crash_on_meta(path, write):
        if path.endswith("meta.json"):
            raise KeyboardInterrupt  # as if killed after the arrays, before the meta
        real(path, write)
    monkeypatch.setattr(checkpoint, "_atomic_write", crash_on_meta)
    with pytest.raises(KeyboardInterrupt):
        checkpoint.save(d, {"w": np.full(3, 2, np.float32)}, {"m": np.ones(3, np.float32)},
                        {"step": 2})
    params, optim, meta = checkpoint.load(d)
    assert meta["step"] == 1 and params["w"].tolist() == [1, 1, 1]
    monkeypatch.setattr(checkpoint, "_atomic_write", real)
    checkpoint.save(d, {"w": np.full(3, 3, np.float32)}, {"m": np.ones(3, np.float32)},
                    {"step": 3})
    params, _, meta = checkpoint.load(d)
    assert meta["step"] == 3 and params["w"].tolist() == [3, 3, 3]
    # only the set meta.json names is left (the crashed save's orphan was overwritten)
    assert [f for f in os.listdir(d) if f.startswith("weights")] == [meta["files"]["weights"]]


def test_no_pickle_and_clear_errors(tmp_path):
    d = str(tmp_path / "ck")
    checkpoint.save(d, {"w": np.ones(2, np.float32)}, {}, {"step": 0})
    meta_path = os.path.join(d, "meta.json")
    with open(meta_path, "w") as f:
        f.write("{broken")
    with pytest.raises(checkpoint.CheckpointError, match="is corrupt"):
        checkpoint.load(d)
