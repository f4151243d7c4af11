"""End-to-end training on one device: determinism, checkpoints, resume (also after SIGKILL and
Ctrl-C), evaluation, and the CLI's one-line errors. Uses a slice of the real Fashion-MNIST
written as IDX files, so the whole pipeline (files -> device gather -> kernels) is exercised."""
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from click.testing import CliRunner

from hetcl.training import data
from hetcl.cli import main
from hetcl.training.train import TrainConfig, Trainer
from test_data import idx_bytes, write
from conftest import subprocess_env

N_TRAIN, N_TEST = 2048, 512


@pytest.fixture(scope="module")
def small_data(tmp_path_factory):
    """The first 2048/512 images of Fashion-MNIST (or random ones where it is not installed)."""
    d = tmp_path_factory.mktemp("fmnist-small")
    try:
        full = data.load_dataset()
        parts = {"train": (full.train_x[:N_TRAIN, 0], full.train_y[:N_TRAIN]),
                 "t10k": (full.test_x[:N_TEST, 0], full.test_y[:N_TEST])}
    except data.DataError:  # a learnable stand-in: one noisy template image per class
        rng = np.random.default_rng(0)
        templates = rng.integers(0, 256, (10, 28, 28))
        parts = {}
        for split, n in (("train", N_TRAIN), ("t10k", N_TEST)):
            labels = rng.integers(0, 10, n, dtype=np.uint8)
            noise = rng.integers(-60, 60, (n, 28, 28))
            parts[split] = (np.clip(templates[labels] + noise, 0, 255).astype(np.uint8), labels)
    for split, arrays in parts.items():
        for kind, a in zip(("images", "labels"), arrays):
            write(d / data.IDX_FILES[(split, kind)][0], idx_bytes(a))
    return str(d)


def cfg(small_data, tmp_path=None, **over):
    base = dict(model="mlp", data=small_data, epochs=2, batch_size=128, lr=0.05, seed=3,
                devices="0", progress=False)
    if tmp_path is not None:
        base["checkpoint"] = str(tmp_path / "ckpt")
    base.update(over)
    return TrainConfig(**base)


def run(config):
    trainer = Trainer(config)
    history = trainer.run()
    return trainer, history


def test_same_seed_same_numbers(small_data):
    t1, h1 = run(cfg(small_data, epochs=1))
    t2, h2 = run(cfg(small_data, epochs=1))
    assert h1[0]["train_loss"] == h2[0]["train_loss"] and h1[0]["test_acc"] == h2[0]["test_acc"]
    p1, p2 = t1.model.parameters(), t2.model.parameters()
    assert all(np.array_equal(p1[k], p2[k]) for k in p1)
    assert h1[0]["test_acc"] > 0.5  # it learns: 10 classes, chance is 0.1


def test_resume_equals_uninterrupted(small_data, tmp_path):
    """1 epoch, stop, resume for 1 more == 2 epochs. (A constant rate: cosine and step
    schedules span --epochs, so a 1-epoch run is not the first half of a 2-epoch one.)"""
    const = dict(lr_schedule="constant", warmup_epochs=0.0)
    full, _ = run(cfg(small_data, epochs=2, **const))
    run(cfg(small_data, tmp_path, epochs=1, **const))
    resumed, history = run(cfg(small_data, tmp_path, epochs=2, resume=True, override=True,
                                 **const))
    assert [h["epoch"] for h in history] == [1, 2]
    a, b = full.model.parameters(), resumed.model.parameters()
    assert max(np.abs(a[k] - b[k]).max() for k in a) <= 1e-6


def cli_process(args, tmp_path):
    env = subprocess_env(HETCL_CACHE_DIR=str(tmp_path / "kcache"))
    return subprocess.Popen([sys.executable, "-m", "hetcl", "train"] + args, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_step(log, epoch, proc, timeout=300):
    end = time.time() + timeout
    while time.time() < end:
        if os.path.exists(log):
            with open(log) as f:
                if any(json.loads(l).get("epoch") == epoch and json.loads(l)["kind"] == "step"
                       for l in f if l.strip()):
                    return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("training did not reach the step")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_run_resumes_to_the_same_parameters(small_data, tmp_path, sig):
    """SIGKILL mid-epoch 2 leaves the epoch-1 checkpoint; Ctrl-C (SIGINT) saves mid-epoch.
    Either way --resume ends where the uninterrupted run ends. 12 epochs, so that even on a
    fast GPU the run is still going when the signal arrives."""
    ckpt, log = str(tmp_path / "ckpt"), str(tmp_path / "log.jsonl")
    args = ["--model", "mlp", "--data", small_data, "--epochs", "12", "--batch-size", "64",
            "--lr", "0.05",
            "--seed", "3", "--devices", "0", "--checkpoint", ckpt]
    proc = cli_process(args + ["--log", log, "--log-every", "step"], tmp_path)
    wait_for_step(log, 2, proc)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    meta = json.load(open(os.path.join(ckpt, "meta.json")))
    if sig == signal.SIGKILL:  # the last complete save: the end of some epoch >= 1
        assert proc.returncode == -signal.SIGKILL and meta["epoch"] >= 1 and meta["step"] == 0
    else:  # saved where it stopped, mid-epoch (a fast GPU may be past epoch 2 by then)
        assert proc.returncode == 130 and "Traceback" not in err
        assert f"interrupted at epoch {meta['epoch'] + 1} step {meta['step']}" in err
        assert meta["epoch"] >= 1 and meta["step"] > 0
    resumed = cli_process(args + ["--resume"], tmp_path)
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    full, _ = run(cfg(small_data, epochs=12, batch_size=64))
    meta = json.load(open(os.path.join(ckpt, "meta.json")))
    saved = np.load(os.path.join(ckpt, meta["files"]["weights"]))
    ref = full.model.parameters()
    assert max(np.abs(saved[k] - ref[k]).max() for k in ref) <= 1e-6


def invoke(*args):
    return CliRunner().invoke(main, list(args))


def test_evaluate_prints_accuracy_and_confusion_matrix(small_data, tmp_path):
    trainer, history = run(cfg(small_data, tmp_path, epochs=1))
    result = invoke("evaluate", "--checkpoint", str(tmp_path / "ckpt"), "--data", small_data,
                    "--devices", "0")
    assert result.exit_code == 0, result.output
    assert f"test accuracy {100 * history[-1]['test_acc']:.2f}%" in result.output
    lines = result.output.splitlines()
    per_class = lines[2:12]  # "i name accuracy% count", the names from the IDX set: 0..9
    assert [l.split()[:2] for l in per_class] == [[str(i), str(i)] for i in range(10)]
    start = lines.index("confusion matrix (rows: true class, columns: predicted):") + 2
    counts = np.array([[int(v) for v in r.split()[1:]] for r in lines[start:] if r.strip()])
    assert counts.shape == (10, 10) and counts.sum() == N_TEST
    assert counts.trace() == round(history[-1]["test_acc"] * N_TEST)
    assert [int(l.split()[-1]) for l in per_class] == list(counts.sum(1))
    assert [float(l.split()[2][:-1]) for l in per_class] == \
        [round(100 * counts[i, i] / counts[i].sum(), 2) for i in range(10)]


def test_checkpoint_errors(small_data, tmp_path):
    run(cfg(small_data, tmp_path, epochs=1))
    ckpt = str(tmp_path / "ckpt")
    other = invoke("train", "--model", "lenet5", "--data", small_data, "--checkpoint", ckpt,
                   "--resume", "--devices", "0", "--batch-size", "128", "--seed", "3")
    assert other.exit_code == 1
    assert other.output.startswith(f"hetcl: error: --resume continues the run saved in {ckpt}"
                                   f", but --model lenet5 (saved: mlp)")
    weights = json.load(open(os.path.join(ckpt, "meta.json")))["files"]["weights"]
    with open(os.path.join(ckpt, weights), "r+b") as f:
        f.seek(100)
        f.write(b"garbage")
    bad = invoke("evaluate", "--checkpoint", ckpt, "--data", small_data, "--devices", "0")
    assert bad.exit_code == 1 and "does not match meta.json" in bad.output
    missing = invoke("evaluate", "--checkpoint", str(tmp_path / "nothing"))
    assert missing.exit_code == 1 and "no checkpoint in" in missing.output
    assert missing.output.count("\n") == 1


def test_cli_train_errors(tmp_path):
    nodata = invoke("train", "--data", str(tmp_path / "none"), "--devices", "0")
    assert nodata.exit_code == 1 and nodata.output.startswith("hetcl: error:")
    assert "dataset-fashion-mnist" in nodata.output and nodata.output.count("\n") == 1
    bad_dev = invoke("train", "--devices", "9")
    assert bad_dev.exit_code == 1 and "no device matches '9'" in bad_dev.output
    no_ckpt = invoke("train", "--resume")
    assert no_ckpt.exit_code == 1 and "--resume needs --checkpoint" in no_ckpt.output


def test_log_and_plot(small_data, tmp_path):
    pytest.importorskip("matplotlib")
    log, png = tmp_path / "m.jsonl", tmp_path / "c.png"
    run(cfg(small_data, epochs=2, log=str(log), plot=str(png)))
    first, *records = [json.loads(l) for l in log.read_text().splitlines()]
    assert first == {"kind": "data", "name": os.path.basename(small_data), "train": N_TRAIN,
                     "test": N_TEST, "class_names": [str(i) for i in range(10)]}
    assert [r["epoch"] for r in records] == [1, 2]
    assert all(0 <= r["test_acc"] <= 1 and r["train_loss"] > 0 for r in records)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_device_out_of_memory_is_one_clear_error(monkeypatch):
    """A batch the only device cannot hold: say so and what to do (no OpenCL jargon alone)."""
    import pyopencl as cl

    import hetcl
    from hetcl.engine import executor
    from hetcl.errors import HetclError
    from hetcl.model.models import mlp

    def no_memory(*args, **kwargs):
        raise cl.MemoryError("clCreateBuffer failed: MEM_OBJECT_ALLOCATION_FAILURE")
    monkeypatch.setattr(executor.Executor, "__init__", no_memory)
    rt = hetcl.Runtime("0")
    x = np.zeros((8, 1, 28, 28), np.float32)
    with pytest.raises(HetclError, match=r"ran out of memory for a batch of 8 .*use a smaller "
                                         r"--batch-size"):
        rt.gradients(mlp(seed=0).build(), x, np.zeros(8, np.int32))
