"""A trained model leaving `hetcl train`: `hetcl predict` on image files and IDX files agrees
with `hetcl evaluate`'s predictions, `rt.predict`'s probabilities, `hetcl export`, and `train
--init` starting from exported (or PyTorch-named) parameters; bad inputs are one-line errors."""
import json

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

import hetcl
from hetcl.cli import main
from hetcl.model.inputs import normalised
from hetcl.training import data
from hetcl.training.predict_inputs import read_inputs
from hetcl.training.saved_model import load_saved
from hetcl.training.train import Trainer
from test_train import N_TEST, cfg, run, small_data  # noqa: F401 (a fixture)

IMAGES = 24  # test images written as PNG files


@pytest.fixture(scope="module")
def trained(small_data, tmp_path_factory):  # noqa: F811
    """A LeNet-5 trained for an epoch, saved; -> (checkpoint dir, the test set)."""
    where = tmp_path_factory.mktemp("run")
    run(cfg(small_data, where, model="lenet5", epochs=1))
    return str(where / "ckpt"), data.load_dataset(small_data)


def invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def evaluate_predictions(ckpt, dataset, count):
    saved = load_saved(ckpt)
    rt = hetcl.Runtime("0")
    return rt.evaluate_indices(saved.model, dataset.test_x[:count], dataset.test_y[:count],
                               dataset.mean, dataset.std)


def test_predict_on_png_files_agrees_with_evaluate(trained, tmp_path):
    ckpt, dataset = trained
    files = []
    for i in range(IMAGES):
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(dataset.test_x[i, 0]).save(files[-1])
    result = invoke("predict", "--checkpoint", ckpt, "--json", "--top-k", 10, "--devices", 0,
                    *files)
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert [r["file"] for r in out] == [str(f) for f in files]
    top1 = [r["top"][0]["index"] for r in out]
    assert top1 == evaluate_predictions(ckpt, dataset, IMAGES).tolist()
    saved = load_saved(ckpt)
    probs = hetcl.Runtime("0").predict(saved.model, normalised(dataset.test_x[:IMAGES],
                                                               saved.mean, saved.std))
    for r, p in zip(out, probs):
        assert [t["class"] for t in r["top"]] == [str(t["index"]) for t in r["top"]]
        assert abs(sum(t["probability"] for t in r["top"]) - 1) < 1e-5
        assert np.allclose([t["probability"] for t in r["top"]],
                           p[[t["index"] for t in r["top"]]], rtol=1e-6, atol=1e-7)
    text = invoke("predict", "--checkpoint", ckpt, "--devices", 0, files[0]).output
    assert text.startswith(f"{files[0]}: {out[0]['top'][0]['class']} ") and text.count("%") == 3


def test_predict_on_an_idx_file(trained, small_data):  # noqa: F811
    ckpt, dataset = trained
    idx = data.IDX_FILES[("t10k", "images")][0]
    result = invoke("predict", "--checkpoint", ckpt, "--json", "--top-k", 1, "--devices", 0,
                    f"{small_data}/{idx}")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert len(out) == N_TEST and out[3]["file"].endswith(f"{idx}[3]")
    assert [r["top"][0]["index"] for r in out] == \
        evaluate_predictions(ckpt, dataset, N_TEST).tolist()


@pytest.mark.parametrize("size, mode, message", [
    ((32, 32), "L", "is 32x32, the model takes 28x28"),
    ((28, 28), "RGB", "is a RGB image, the model takes grayscale")])
def test_predict_refuses_an_image_of_another_size_or_mode(trained, tmp_path, size, mode,
                                                         message):
    path = tmp_path / "odd.png"
    Image.new(mode, size).save(path)
    result = invoke("predict", "--checkpoint", trained[0], "--devices", 0, path)
    assert result.exit_code == 1 and result.output.count("\n") == 1
    assert result.output.startswith("hetcl: error: ") and message in result.output


def test_predict_reads_an_image_once_and_refuses_a_damaged_one(tmp_path, monkeypatch):
    pixels = np.random.default_rng(0).integers(0, 256, (28, 28), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "ok.png")
    opened, open_image = [], Image.open
    monkeypatch.setattr(Image, "open", lambda path: opened.append(path) or open_image(path))
    x, names = read_inputs([str(tmp_path / "ok.png")], (3, 28, 28))  # gray into RGB
    assert x.shape == (1, 3, 28, 28) and all(np.array_equal(c, pixels) for c in x[0])
    assert opened == [str(tmp_path / "ok.png")] and names == opened
    (tmp_path / "cut.png").write_bytes((tmp_path / "ok.png").read_bytes()[:100])
    with pytest.raises(data.DataError, match=r"cut\.png: Pillow cannot decode it \(.*trunc"):
        read_inputs([str(tmp_path / "cut.png")], (1, 28, 28))


@pytest.mark.parametrize("model", ["lenet5", "mlp", "resnet20"])
def test_train_init_starts_from_exported_parameters(small_data, tmp_path, model):  # noqa: F811
    pytest.importorskip("safetensors")
    from hetcl.interop.safetensors_io import save_safetensors
    first = Trainer(cfg(small_data, model=model, epochs=1, seed=5))
    save_safetensors(first.model, tmp_path / "w.safetensors")  # PyTorch's names
    started = Trainer(cfg(small_data, model=model, epochs=1, seed=9,
                          init=str(tmp_path / "w.safetensors")))
    a, b = first.model.parameters(), started.model.parameters()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    if model == "lenet5":  # and it trains from there
        history = started.run()
        assert history[-1]["test_acc"] > 0.5


def test_export_both_formats(trained, tmp_path):
    pytest.importorskip("onnx")
    pytest.importorskip("safetensors")
    import onnx
    ckpt = trained[0]
    result = invoke("export", "--checkpoint", ckpt, "--format", "onnx", "--out",
                    tmp_path / "m.onnx")
    assert result.exit_code == 0, result.output
    props = {p.key: p.value for p in onnx.load(str(tmp_path / "m.onnx")).metadata_props}
    assert json.loads(props["hetcl.class_names"]) == [str(i) for i in range(10)]
    assert props["hetcl.model"] == "lenet5"
    result = invoke("export", "--checkpoint", ckpt, "--format", "safetensors")
    assert result.exit_code == 0 and result.output == f"wrote {ckpt}/model.safetensors\n"
    result = invoke("train", "--init", tmp_path / "missing.safetensors")
    assert result.exit_code == 1 and "no such file" in result.output
