"""Nothing lost, nothing silently wrong: a run is never overwritten by accident, Ctrl-C tells the
truth, a diverging run never replaces a good save, one run per directory, outputs checked before
the first step, checkpoints are data (never instructions), and --resume continues the same run.
Signals are sent by the test itself at fixed points (no sleeping on timing luck)."""
import errno
import json
import os
import signal
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

from hetcl.training import checkpoint
from hetcl.cli import main
from hetcl.errors import HetclError
from hetcl.training.run_store import RunStore
from hetcl.training.rundir import RunLock
from hetcl.training.train import Diverged, Trainer
from test_train import cfg, run, small_data  # noqa: F401 (small_data: a fixture)


def invoke(*args):
    return CliRunner().invoke(main, list(args))


def meta_of(directory):
    with open(os.path.join(directory, "meta.json")) as f:
        return json.load(f)


def train_args(small_data, ckpt, *more):
    return ["train", "--model", "mlp", "--data", small_data, "--batch-size", "128",
            "--lr", "0.05", "--seed", "3", "--devices", "0", "--checkpoint", ckpt,
            "--epochs", "1", *more]


def steps_with(trainer, at_step, action):
    """Make the trainer's runtime run action() during its step number at_step (0-based)."""
    real, count = trainer.rt.train_step_indices, [0]

    def step(*args, **kwargs):
        if count[0] == at_step:
            action()
        count[0] += 1
        return real(*args, **kwargs)
    trainer.rt.train_step_indices = step


def ctrl_c():
    os.kill(os.getpid(), signal.SIGINT)


# --- a run is never overwritten ---------------------------------------------------------------
def test_a_run_is_never_overwritten_by_accident(small_data, tmp_path):
    ckpt = str(tmp_path / "ckpt")
    assert invoke(*train_args(small_data, ckpt)).exit_code == 0
    before = meta_of(ckpt)
    again = invoke(*train_args(small_data, ckpt))
    assert again.exit_code == 1 and again.output.count("\n") == 1
    assert f"{ckpt} holds a run (mlp, epoch 1 done); pass --resume" in again.output
    assert meta_of(ckpt) == before
    fresh = invoke(*train_args(small_data, ckpt, "--start-over"))
    assert fresh.exit_code == 0, fresh.output
    moved = [d for d in os.listdir(tmp_path) if d.startswith("ckpt.previous-")]
    assert len(moved) == 1 and f"moved to {tmp_path / moved[0]}" in fresh.output
    assert meta_of(tmp_path / moved[0]) == before  # the old run, whole
    same = ("train_loss", "train_acc", "test_acc")  # same seed: same numbers again
    assert [{k: h[k] for k in same} for h in meta_of(ckpt)["history"]] == \
        [{k: h[k] for k in same} for h in before["history"]]


# --- Ctrl-C -------------------------------------------------------------------------------------
def test_ctrl_c_during_the_save_waits_for_it_and_the_message_is_true(small_data, tmp_path,
                                                                     monkeypatch):
    """First Ctrl-C at step 5; the second arrives while the checkpoint is written: the save
    completes, and the run says so."""
    trainer = Trainer(cfg(small_data, tmp_path, epochs=1))
    steps_with(trainer, 5, ctrl_c)
    real = checkpoint._atomic_write

    def write_with_ctrl_c(path, write):
        ctrl_c()
        real(path, write)
    monkeypatch.setattr(checkpoint, "_atomic_write", write_with_ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    ckpt = str(tmp_path / "ckpt")
    assert trainer.stopped == f"saved to {ckpt}, --resume continues"
    params, _, meta = checkpoint.load(ckpt)
    assert (meta["epoch"], meta["step"]) == (0, 6)
    assert all(np.isfinite(v).all() for v in params.values())


def test_second_ctrl_c_in_a_step_saves_nothing_and_says_so(small_data, tmp_path):
    run(cfg(small_data, tmp_path, epochs=1))
    before = meta_of(tmp_path / "ckpt")
    trainer = Trainer(cfg(small_data, tmp_path, epochs=2, resume=True, override=True))
    steps_with(trainer, 3, lambda: (ctrl_c(), ctrl_c()))
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    assert trainer.stopped.startswith("nothing saved (Ctrl-C twice stopped in the middle of a "
                                      "step)")
    assert "still holds the save after epoch 1 done" in trainer.stopped
    assert meta_of(tmp_path / "ckpt") == before


@pytest.mark.parametrize("stop_at", [5, 15])  # 15: the epoch's last step (16 steps)
def test_resumed_epoch_reports_the_whole_epoch(small_data, tmp_path, stop_at):
    full, history = run(cfg(small_data, epochs=1))
    trainer = Trainer(cfg(small_data, tmp_path, epochs=1))
    steps_with(trainer, stop_at, ctrl_c)
    with pytest.raises(KeyboardInterrupt):
        trainer.run()
    _, resumed = run(cfg(small_data, tmp_path, epochs=1, resume=True))
    assert resumed[0]["train_loss"] == pytest.approx(history[0]["train_loss"], rel=1e-6)
    assert resumed[0]["train_acc"] == history[0]["train_acc"]


def test_cli_says_what_was_saved(small_data, tmp_path, monkeypatch):
    real = Trainer.run

    def interrupted(self):
        steps_with(self, 2, ctrl_c)
        return real(self)
    monkeypatch.setattr(Trainer, "run", interrupted)
    ckpt = str(tmp_path / "ckpt")
    result = invoke(*train_args(small_data, ckpt))
    assert result.exit_code == 130
    assert f"interrupted at epoch 1 step 3; saved to {ckpt}, --resume continues" in result.output
    nothing = invoke("train", "--model", "mlp", "--data", small_data, "--devices", "0",
                     "--epochs", "1")
    assert "nothing saved (no --checkpoint)" in nothing.output


# --- divergence ---------------------------------------------------------------------------------
def test_lr_100_stops_with_the_rule_in_the_message(small_data):
    result = invoke("train", "--model", "mlp", "--data", small_data, "--devices", "0",
                    "--lr", "100")
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "hetcl: error: the loss reached" in result.output
    assert "(a run stops at a NaN, an Inf or a loss above 23.03, --max-loss); lower --lr " \
           "(now 100.0)" in result.output


def test_an_exploding_loss_stops_the_run_and_keeps_the_good_save(small_data, tmp_path):
    _, history = run(cfg(small_data, tmp_path, epochs=1))
    before = meta_of(tmp_path / "ckpt")
    explode = cfg(small_data, tmp_path, epochs=2, resume=True, override=True, lr=100.0,
                  lr_schedule="constant", momentum=0.0)
    with pytest.raises(Diverged, match=r"the loss reached .* above 23.03, --max-loss\); lower "
                                       r"--lr \(now 100.0\): .* still holds the save after "
                                       r"epoch 1 done"):
        run(explode)
    assert meta_of(tmp_path / "ckpt") == before
    acc, _ = __import__("hetcl.training.evaluate", fromlist=["evaluate"]).evaluate(
        str(tmp_path / "ckpt"), small_data, "0")
    assert acc == history[0]["test_acc"]


def test_non_finite_parameters_are_never_saved(small_data, tmp_path):
    run(cfg(small_data, tmp_path, epochs=1))
    before = meta_of(tmp_path / "ckpt")
    trainer = Trainer(cfg(small_data, tmp_path, epochs=2, resume=True, override=True))
    model = trainer.model
    poison = lambda: model.load_parameters(  # noqa: E731 (the last update "made" NaN)
        {k: np.full_like(v, np.nan) for k, v in model.parameters().items()})
    real = trainer.accuracies
    trainer.accuracies = lambda: (poison(), real())[1]
    with pytest.raises(Diverged, match="the parameters became NaN or Inf"):
        trainer.run()
    assert meta_of(tmp_path / "ckpt") == before


def test_the_best_save_is_kept_beside_the_last(tmp_path):
    d = str(tmp_path / "ckpt")
    store = RunStore(d)
    store.open(resume=False, start_over=False)
    for epoch, acc in ((1, 0.8), (2, 0.5), (3, 0.6)):
        store.save({"w": np.full(2, epoch, np.float32)}, {}, {"epoch": epoch, "step": 0,
                                                               "score": acc})
    store.close()
    best, _, meta = checkpoint.load(d, "best")
    last, _, _ = checkpoint.load(d, "last")
    assert best["w"].tolist() == [1, 1] and last["w"].tolist() == [3, 3]
    assert meta["best"]["score"] == 0.8
    assert sorted(f for f in os.listdir(d) if f.endswith(".npz")) == \
        ["optim-1.npz", "optim-3.npz", "weights-1.npz", "weights-3.npz"]


# --- one run per directory ----------------------------------------------------------------------
def test_one_run_per_checkpoint_directory(small_data, tmp_path):
    first = Trainer(cfg(small_data, tmp_path, epochs=1))
    with pytest.raises(HetclError, match=rf"in use by another hetcl run \(pid {os.getpid()}\)"):
        Trainer(cfg(small_data, tmp_path, epochs=1))
    first.run()  # releases it at its end
    Trainer(cfg(small_data, tmp_path, epochs=2, resume=True, override=True)).close()


def test_a_killed_run_leaves_no_lock_behind(tmp_path):
    code = ("import os, sys, signal; from hetcl.training.rundir import RunLock; RunLock(sys.argv[1])"
            ".acquire(); print('locked', flush=True); os.kill(os.getpid(), signal.SIGKILL)")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True,
                          text=True, env=dict(os.environ, PYTHONPATH=os.getcwd()))
    assert proc.stdout == "locked\n" and proc.returncode == -signal.SIGKILL
    lock = RunLock(str(tmp_path))
    lock.acquire()
    lock.release()


# --- outputs checked before the first step ------------------------------------------------------
@pytest.mark.parametrize("option", ["checkpoint", "log", "plot"])
def test_unwritable_outputs_fail_before_training(small_data, tmp_path, option):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    path = str(blocker / "under")  # (a path under a file: refused even to root)
    args = train_args(small_data, str(tmp_path / "ckpt")) + [f"--{option}", path]
    result = invoke(*args)
    assert result.exit_code == 1 and result.output.count("\n") == 1, result.output
    assert "cannot write" in result.output and str(blocker) in result.output
    assert not os.path.exists(tmp_path / "ckpt" / "meta.json")  # no epoch was spent


def test_plot_without_matplotlib_fails_before_training(small_data, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    result = invoke(*train_args(small_data, str(tmp_path / "ckpt")),
                    "--plot", str(tmp_path / "c.png"))
    assert result.exit_code == 1 and "--plot needs matplotlib" in result.output
    assert not os.path.exists(tmp_path / "ckpt" / "meta.json")


def test_a_full_disk_is_one_line_and_leaves_no_stray_files(small_data, tmp_path, monkeypatch):
    run(cfg(small_data, tmp_path, epochs=1))
    ckpt = str(tmp_path / "ckpt")
    before, files = meta_of(ckpt), sorted(os.listdir(ckpt))
    real, calls = np.savez, []

    def full(f, **arrays):
        calls.append(1)
        if len(calls) == 2:  # the optimizer file, after the weights were written
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(f, **arrays)
    monkeypatch.setattr(np, "savez", full)
    result = invoke(*train_args(small_data, ckpt, "--resume", "--override", "--epochs", "2"))
    error = result.output.splitlines()[-1]  # (after the banner and the epoch's progress)
    assert result.exit_code == 1 and error.startswith("hetcl: error: could not save the "
                                                      "checkpoint"), result.output
    assert "No space left on device; nothing of this save was kept" in error
    assert meta_of(ckpt) == before and sorted(os.listdir(ckpt)) == files


# --- checkpoints are data -----------------------------------------------------------------------
def _tamper(ckpt, change):
    meta = meta_of(ckpt)
    change(meta)
    with open(os.path.join(ckpt, "meta.json"), "w") as f:
        json.dump(meta, f)


@pytest.mark.parametrize("name", ["../outside.npz", "/tmp/x.npz", "weights-1.npz/..",
                                  "notes.txt"])
def test_file_names_outside_the_checkpoint_are_refused(small_data, tmp_path, name):
    run(cfg(small_data, tmp_path, epochs=1))
    ckpt = str(tmp_path / "ckpt")
    outside = tmp_path / "outside.npz"
    outside.write_bytes(b"precious")
    _tamper(ckpt, lambda m: m["files"].update(extra=name) if name == "../outside.npz" else
            m["files"].update(weights=name))
    for args in (("--resume", "--override", "--epochs", "2"),):
        result = invoke(*train_args(small_data, ckpt, *args))
        assert result.exit_code == 1 and "refusing it" in result.output, result.output
    assert outside.read_bytes() == b"precious"


@pytest.mark.parametrize("damage", ["shape", "missing", "dtype"])
def test_misfit_optimizer_arrays_are_refused_before_a_device(small_data, tmp_path, damage):
    run(cfg(small_data, tmp_path, epochs=1))
    ckpt = str(tmp_path / "ckpt")
    meta = meta_of(ckpt)
    name = meta["files"]["optim"]
    with np.load(os.path.join(ckpt, name)) as f:
        arrays = {k: f[k] for k in f.files}
    key = sorted(arrays)[0]
    if damage == "shape":
        arrays[key] = np.zeros(3, np.float32)
    elif damage == "missing":
        del arrays[key]
    else:
        arrays[key] = arrays[key].astype(np.float64)
    np.savez(os.path.join(ckpt, name), **arrays)
    _tamper(ckpt, lambda m: m["sha256"].update({name: checkpoint._digest(
        os.path.join(ckpt, name))}))
    with pytest.raises(checkpoint.CheckpointError, match="optimizer buffers"):
        Trainer(cfg(small_data, tmp_path, epochs=2, resume=True, override=True))


# --- --resume continues the same run ------------------------------------------------------------
def test_resume_takes_the_saved_settings_and_refuses_changes(small_data, tmp_path):
    ckpt = str(tmp_path / "ckpt")
    assert invoke(*train_args(small_data, ckpt)).exit_code == 0
    changed = invoke("train", "--checkpoint", ckpt, "--resume", "--devices", "0",
                     "--lr", "5", "--momentum", "0")
    assert changed.exit_code == 1 and changed.output.count("\n") == 1
    assert "but --lr 5.0 (saved: 0.05), --momentum 0.0 (saved: 0.9); drop the flags" in \
        changed.output
    trainer = Trainer(cfg(small_data, tmp_path, resume=True), given={"devices"})
    assert (trainer.cfg.lr, trainer.cfg.batch_size, trainer.cfg.epochs) == (0.05, 128, 1)
    assert trainer.cfg.data == os.path.abspath(small_data)
    trainer.close()


def test_resume_refuses_other_data(small_data, tmp_path):
    ckpt = str(tmp_path / "ckpt")
    assert invoke(*train_args(small_data, ckpt)).exit_code == 0
    other = tmp_path / "other"
    other.mkdir()
    for name in os.listdir(small_data):
        blob = open(os.path.join(small_data, name), "rb").read()
        if "images" in name:  # one pixel differs
            blob = blob[:-1] + bytes([(blob[-1] + 1) % 256])
        (other / name).write_bytes(blob)
    result = invoke(*train_args(str(other), ckpt, "--resume"))
    assert result.exit_code == 1 and "was trained on" in result.output and \
        "pass its --data, or --override" in result.output


# --- smaller checks ----------------------------------------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["--lr", "nan"], "--lr must be a finite number"),
    (["--lr", "inf"], "--lr must be a finite number"),
    (["--lr", "0"], "--lr must be above 0"),
    (["--momentum", "1.5"], "--momentum must be a finite number, at least 0 below 1"),
    (["--seed", "-1"], "--seed must be between 0"),
    (["--max-loss", "nan"], "--max-loss must be a finite number"),
    (["--optimizer", "adam", "--nesterov"], "--nesterov is SGD's"),
    (["--max-grad-norm", "0"], "--max-grad-norm must be above 0"),
    (["--max-grad-norm", "nan"], "--max-grad-norm must be a finite number"),
    (["--optimizer", "adamw", "--lr", "-1"], "--lr must be a finite number, at least 0"),
])
def test_bad_numbers_are_one_line_errors(args, message):
    result = invoke("train", "--devices", "0", *args)
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert message in result.output


@pytest.mark.parametrize("args", [["bench", "--steps", "0"], ["bench", "--batch-size", "-3"],
                                  ["tune", "--candidates", "-1"], ["tune", "--batch-size", "0"]])
def test_bench_and_tune_numbers_are_checked(args):
    result = invoke(*args)
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "is not in the range" in result.output


def test_checkpoint_files_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        checkpoint.save(str(tmp_path), {"w": np.ones(2, np.float32)}, {}, {"epoch": 1})
    finally:
        os.umask(old)
    modes = {f: os.stat(tmp_path / f).st_mode & 0o777 for f in os.listdir(tmp_path)}
    assert set(modes.values()) == {0o644}, modes


def test_a_leaked_temporary_file_is_removed_at_the_next_save(tmp_path):
    (tmp_path / ".tmp-abc123").write_bytes(b"half a save")
    checkpoint.save(str(tmp_path), {"w": np.ones(2, np.float32)}, {}, {"epoch": 1})
    assert not any(f.startswith(".tmp-") for f in os.listdir(tmp_path))
