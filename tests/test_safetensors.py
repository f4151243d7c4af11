"""Parameters between hetcl and PyTorch through safetensors files, for every shipped model.

hetcl -> PyTorch: save_safetensors writes PyTorch's state_dict names, the torch.nn twin
(tools/torch_models.py) takes the file with load_state_dict(strict=True) and gives hetcl's
logits (batch norm's affine parameters and running statistics random first, so they count).
PyTorch -> hetcl: a twin trained a few SGD steps in PyTorch, saved by safetensors.torch, loaded
with model.load_parameters(read_safetensors(f)) gives the twin's logits and predictions. Every
model at 28x28x1, on Fashion-MNIST test images where the data set is installed (random images
otherwise). Files that do not fit give one HetclError line naming every mismatch.
"""
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
safetensors_torch = pytest.importorskip("safetensors.torch")

import hetcl  # noqa: E402
from conftest import DEVICES  # noqa: E402
from hetcl.errors import HetclError, ShapeError  # noqa: E402
from hetcl.interop.safetensors_io import (load_safetensors, read_safetensors,  # noqa: E402
                                          save_safetensors, to_hetcl_names)
from hetcl.interop.torch_names import torch_names  # noqa: E402
from hetcl.layers import Add, BatchNorm2D, Conv2D, Dense, GlobalAvgPool, ReLU  # noqa: E402
from hetcl.model.models import MODELS, build_model  # noqa: E402
from hetcl.training.data import DEFAULT_DATA_DIR, load_dataset  # noqa: E402
from torch_models import torch_model  # noqa: E402
from torch_twin import TorchTwin  # noqa: E402

TOL = 1e-5      # max|hetcl - torch| / max|torch| of the logits
CLASSES = 10
# tests/test_onnx_export.py's input and batch: every model at 28x28x1, the two share kernels
SHAPE, BATCH = (1, 28, 28), 64


@pytest.fixture(scope="module")
def runtime():
    if not DEVICES:
        pytest.skip("no OpenCL device")
    return hetcl.Runtime(devices=[DEVICES[0]])


@pytest.fixture(scope="module")
def fashion():
    """Normalised Fashion-MNIST (train batch, test images, test labels), or None."""
    if not os.path.isdir(DEFAULT_DATA_DIR):
        return None
    data = load_dataset()
    norm = lambda v: ((v / 255.0 - data.mean) / data.std).astype(np.float32)  # noqa: E731
    return norm(data.train_x[:32]), data.train_y[:32], norm(data.test_x[:256]), data.test_y[:256]


def _images(name, fashion, seed):
    """(train x, train y, test x, test y) float32 NCHW images for model `name`."""
    shape = SHAPE
    if shape == (1, 28, 28) and fashion is not None:
        return fashion
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((32 + BATCH,) + shape).astype(np.float32)
    y = rng.integers(0, CLASSES, 32 + BATCH)
    return x[:32], y[:32], x[32:], y[32:]


def _rel_err(got, expect):
    return float(np.abs(got - expect).max() / np.abs(expect).max())


def _torch_logits(twin, x):
    twin.eval()
    with torch.no_grad():
        return twin(torch.from_numpy(x)).numpy()


def _random_batch_norm(model, rng):
    """The model's parameters with every batch norm tensor random (running variance > 0)."""
    params = model.parameters()
    for node in model.nodes[1:]:
        if isinstance(node.layer, BatchNorm2D):
            c, prefix = node.layer.num_features, node.layer.name
            params[f"{prefix}.weight"] = rng.uniform(0.5, 1.5, c).astype(np.float32)
            params[f"{prefix}.bias"] = rng.normal(0, 0.2, c).astype(np.float32)
            params[f"{prefix}.running_mean"] = rng.normal(0, 0.2, c).astype(np.float32)
            params[f"{prefix}.running_var"] = rng.uniform(0.5, 2.0, c).astype(np.float32)
    model.load_parameters(params)


@pytest.mark.parametrize("name", list(MODELS))
def test_hetcl_file_loads_into_torch(name, runtime, fashion, tmp_path):
    model = build_model(name, SHAPE, CLASSES, seed=1)
    _random_batch_norm(model, np.random.default_rng(1))
    path = tmp_path / f"{name}.safetensors"
    save_safetensors(model, path)
    twin = torch_model(name, SHAPE, CLASSES)
    twin.load_state_dict(safetensors_torch.load_file(str(path)), strict=True)
    x = _images(name, fashion, 2)[2]
    expect = _torch_logits(twin, x)
    err = _rel_err(runtime.forward(model, x, batch_size=BATCH), expect)
    print(f"{name} hetcl -> torch: relative error {err:.2e}")
    assert err < TOL


def _train_in_torch(twin, x, y, steps=3):
    opt = torch.optim.SGD(twin.parameters(), lr=0.01, momentum=0.9)
    twin.train()
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(twin(torch.from_numpy(x)),
                                          torch.from_numpy(np.asarray(y, np.int64))).backward()
        opt.step()


@pytest.mark.parametrize("name", list(MODELS))
def test_torch_file_loads_into_hetcl(name, runtime, fashion, tmp_path):
    torch.manual_seed(0)
    twin = torch_model(name, SHAPE, CLASSES)
    train_x, train_y, x, y = _images(name, fashion, 3)
    _train_in_torch(twin, train_x, train_y)
    path = tmp_path / f"{name}.safetensors"
    safetensors_torch.save_file(twin.state_dict(), str(path))
    model = build_model(name, SHAPE, CLASSES, seed=4)
    model.load_parameters(read_safetensors(path))
    state, params = twin.state_dict(), model.parameters()
    for hetcl_name, torch_name in torch_names(model).items():
        np.testing.assert_array_equal(params[hetcl_name], state[torch_name].numpy())
    expect = _torch_logits(twin, x)
    got = runtime.forward(model, x, batch_size=BATCH)
    err = _rel_err(got, expect)
    print(f"{name} torch -> hetcl: relative error {err:.2e}")
    assert err < TOL
    np.testing.assert_array_equal(got.argmax(1), expect.argmax(1))
    assert (got.argmax(1) == y).mean() == (expect.argmax(1) == y).mean()


def _one_line_error(call):
    with pytest.raises(HetclError) as info:
        call()
    message = str(info.value)
    assert "\n" not in message
    return message


def test_file_of_another_model(tmp_path):
    path = tmp_path / "lenet5.safetensors"
    safetensors_torch.save_file(torch_model("lenet5", (1, 28, 28)).state_dict(), str(path))
    mlp = build_model("mlp", (1, 28, 28), CLASSES)
    message = _one_line_error(lambda: mlp.load_parameters(read_safetensors(path)))
    for part in ("unknown names 0.bias, 0.weight", "missing 1.weight, 1.bias",
                 "3.weight: file (16, 6, 5, 5) vs model (128, 256)", "another model"):
        assert part in message, message
    foreign = {"features.0.weight": np.zeros(3, np.float32)}
    message = _one_line_error(lambda: to_hetcl_names(mlp, foreign, "x.safetensors"))
    assert message.startswith("x.safetensors: ") and "features.0.weight" in message
    assert "missing 1.weight, 1.bias, 3.weight, 3.bias and 2 more" in message, message


def test_file_with_wrong_shapes(tmp_path):
    path = tmp_path / "resnet20-5.safetensors"
    safetensors_torch.save_file(torch_model("resnet20", (3, 32, 32), 5).state_dict(), str(path))
    model = build_model("resnet20", (3, 32, 32), CLASSES)
    message = _one_line_error(lambda: load_safetensors(model, path))
    assert str(path) in message and "unknown" not in message and "missing" not in message
    assert "linear.weight: file (5, 64) vs model (10, 64)" in message, message
    assert "linear.bias: file (5,) vs model (10,)" in message, message


def test_not_a_safetensors_file(tmp_path):
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"not a safetensors file at all")
    assert str(junk) in _one_line_error(lambda: read_safetensors(junk))
    model = build_model("mlp", (1, 28, 28), CLASSES)
    whole = tmp_path / "whole.safetensors"
    save_safetensors(model, whole)
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(whole.read_bytes()[:-100])
    assert str(cut) in _one_line_error(lambda: read_safetensors(cut))
    assert "does not exist" in _one_line_error(lambda: read_safetensors(tmp_path / "none"))


def test_hetcl_names_round_trip(tmp_path):
    from safetensors import safe_open
    model = build_model("lenet5", (1, 28, 28), CLASSES, seed=5)
    path = tmp_path / "hetcl.safetensors"
    save_safetensors(model, path, names="hetcl")
    arrays = read_safetensors(path)
    assert set(arrays) == set(model.parameters())
    with safe_open(str(path), "np") as f:
        assert f.metadata()["hetcl.names"] == "hetcl"
    other = build_model("lenet5", (1, 28, 28), CLASSES, seed=6)
    other.load_parameters(arrays)
    for k, v in model.parameters().items():
        np.testing.assert_array_equal(other.parameters()[k], v)
    _one_line_error(lambda: save_safetensors(model, path, names="keras"))


def test_other_graphs_keep_their_names():
    """Neither a Sequential nor a CIFAR ResNet: PyTorch's names are hetcl's, as a ModuleDict
    keyed by layer name (TorchTwin) has them, num_batches_tracked included."""
    g = hetcl.Graph(seed=0)
    x = g.input((3, 8, 8))
    y = g.add(ReLU(), g.add(BatchNorm2D(4), g.add(Conv2D(3, 4, 3, padding=1), x)))
    h = g.add(Add(), y, g.add(Conv2D(3, 4, 1), x))
    g.add(Dense(4, CLASSES), g.add(GlobalAvgPool(), h))
    g.build()
    assert all(k == v for k, v in torch_names(g).items())
    twin = TorchTwin(g)
    with torch.no_grad():
        twin.layers["bn0"].running_var.fill_(3.0)
    state = {k: v.numpy() for k, v in twin.layers.state_dict().items()}
    assert "bn0.num_batches_tracked" in state
    g.load_parameters(state)
    assert (g.parameters()["bn0.running_var"] == 3.0).all()


def test_hetcl_names_keep_their_errors():
    model = build_model("mlp", (1, 28, 28), CLASSES)
    params = model.parameters()
    params["dense9.weight"] = params.pop("dense0.weight")
    with pytest.raises(ShapeError, match="parameters do not fit this model"):
        model.load_parameters(params)
