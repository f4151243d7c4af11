"""`hetcl train` on the user's own images: an image folder with a corrupt and a non-image file
trains and is evaluated by class name; the held-out validation part and the best save; on-device
augmentation resumes to the same numbers."""
import json
import os

import numpy as np
import pytest
from click.testing import CliRunner

from hetcl.cli import main
from hetcl.training import checkpoint, data
from test_image_folder import write_class
from test_train import cfg, run, small_data  # noqa: F401 (a fixture)

pytestmark = pytest.mark.skipif(not os.path.isdir(data.DEFAULT_DATA_DIR),
                                reason="dataset-fashion-mnist is not installed")
# class folder -> (Fashion-MNIST label, images): three classes, uneven
CLASSES = {"sneaker": (7, 120), "trouser": (1, 200), "tshirt": (0, 300)}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    fashion = data.load_dataset(data.DEFAULT_DATA_DIR)
    for name, (label, count) in CLASSES.items():
        write_class(root / name, fashion.train_x[np.flatnonzero(fashion.train_y == label)[
            :count], 0])
    (root / "trouser" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(40))
    (root / "tshirt" / "notes.txt").write_text("not an image")
    return root


def test_an_image_folder_trains_and_evaluates_by_class_name(folder, tmp_path):
    ckpt, log = tmp_path / "ckpt", tmp_path / "log.jsonl"
    result = CliRunner().invoke(main, [
        "train", "--data", str(folder), "--model", "mlp", "--epochs", "2", "--batch-size",
        "32", "--devices", "0", "--checkpoint", str(ckpt), "--log", str(log)])
    assert result.exit_code == 0, result.output
    warned = [l for l in result.output.splitlines() if l.startswith("hetcl: warning:")]
    assert len(warned) == 2 and "broken.png" in warned[0] + warned[1] and \
        "notes.txt" in warned[0] + warned[1]
    first, *epochs = [json.loads(l) for l in log.read_text().splitlines()]
    assert first["class_names"] == sorted(CLASSES) and first["val"] == 62  # 10% of 620
    assert first["train"] == 558 and "test" not in first
    assert epochs[-1]["val_acc"] > 0.8  # chance: 0.48 (the largest class)
    meta = checkpoint.read_meta(str(ckpt))
    assert meta["class_names"] == sorted(CLASSES)
    assert meta["best"]["score"] == max(e["val_acc"] for e in epochs)
    result = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(ckpt), "--devices", "0"])
    assert result.exit_code == 0, result.output
    lines = [l for l in result.output.splitlines() if not l.startswith("hetcl: warning:")]
    assert lines[0].startswith(f"val accuracy {100 * epochs[-1]['val_acc']:.2f}% (")
    assert [l.split()[1] for l in lines[2:5]] == sorted(CLASSES)


def test_strict_refuses_a_bad_file(folder, tmp_path):
    result = CliRunner().invoke(main, ["train", "--data", str(folder), "--strict", "--devices",
                                       "0", "--epochs", "1"])
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert result.output.startswith("hetcl: error: ")
    assert "broken.png" in result.output or "notes.txt" in result.output


def test_augmented_run_resumes_to_the_same_numbers(small_data, tmp_path):  # noqa: F811
    const = dict(lr_schedule="constant", warmup_epochs=0.0, augment="flip-crop",
                 val_split=0.25)
    full, history = run(cfg(small_data, epochs=2, **const))
    run(cfg(small_data, tmp_path, epochs=1, **const))
    resumed, _ = run(cfg(small_data, tmp_path, epochs=2, resume=True, override=True, **const))
    a, b = full.model.parameters(), resumed.model.parameters()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert len(full.data.val_y) == 512 and len(full.data.train_y) == 1536
    assert set(history[-1]) >= {"val_acc", "test_acc"}
    plain, _ = run(cfg(small_data, epochs=1, val_split=0.25))
    assert plain.history[0]["train_loss"] != history[0]["train_loss"]  # it did augment
