"""ONNX export (hetcl/interop/onnx_export.py): ONNX Runtime on the exported file gives the logits
hetcl's own forward gives - every shipped model on Fashion-MNIST test images, small graphs with the
other layers - and the file passes onnx.checker and carries its metadata.

The exported graph takes raw pixels 0..255 and normalises them itself; hetcl's forward is given
the same pixels normalised as the gather kernel does (pixels * scale + shift, both float32). Runs
on the first device only: the export does not depend on the device, and every model's kernels
are compiled once."""
import json
import os
import sys

import numpy as np
import pytest

import hetcl
from conftest import DEVICES
from hetcl.errors import HetclError
from hetcl.interop.onnx_export import ExportError, export_onnx
from hetcl.layers import (Add, AvgPool2D, BatchNorm1D, Conv2D, Dense, Dropout, Flatten, Layer,
                          MaxPool2D, ReLU, Sigmoid)
from hetcl.model.inputs import normalised
from hetcl.model.models import MODELS, build_model
from hetcl.training.data import DEFAULT_DATA_DIR, load_dataset

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

TOL = 1e-5  # max|onnx - hetcl| / max|hetcl|
# Every shipped model at Fashion-MNIST's 28x28x1 (each takes it), on its real test images, in
# batches of 64: resnet20's kernels for that shape and batch are built for tests/test_batchnorm.py
# too, and tests/test_safetensors.py uses the same.
SHAPE, BATCH = (1, 28, 28), 64
IMAGES = 1000


@pytest.fixture(scope="module")
def rt():
    if not DEVICES:
        pytest.skip("no OpenCL device")
    return hetcl.Runtime([DEVICES[0]])


@pytest.fixture(scope="module")
def fashion():
    """(uint8 images [1000, 1, 28, 28], mean, std): Fashion-MNIST's first test images where
    the data set is installed, else random images with its statistics."""
    if os.path.isdir(DEFAULT_DATA_DIR):
        data = load_dataset()
        return data.test_x[:1000], data.mean, data.std
    return np.random.default_rng(3).integers(0, 256, (1000, 1, 28, 28), np.uint8), 0.286, 0.353


def randomise(model, seed):
    """Random biases and batch norm parameters and statistics (hetcl initialises them to
    constants, under which a missing or misplaced one would go unnoticed)."""
    rng, params = np.random.default_rng(seed), model.parameters()
    for name, value in params.items():
        key = name.rsplit(".", 1)[1]
        if key == "running_var" or (key == "weight" and f"{name[:-6]}running_var" in params):
            params[name] = rng.uniform(0.5, 2.0, value.shape).astype(np.float32)
        elif key in ("bias", "running_mean"):
            params[name] = rng.normal(0.0, 0.2, value.shape).astype(np.float32)
    model.load_parameters(params)
    return model


def compare(rt, model, pixels, path, mean=0.0, std=1.0):
    """-> max|onnx - hetcl| / max|hetcl| over the logits of uint8 `pixels`, after checking the
    file and that both pick the same class for every image."""
    export_onnx(model, path, mean=mean, std=std)
    onnx.checker.check_model(onnx.load(str(path)), full_check=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(["logits"], {"pixels": pixels.astype(np.float32)})[0]
    want = rt.forward(model, normalised(pixels, mean, std), batch_size=BATCH)
    assert got.shape == want.shape and got.dtype == np.float32
    err = float(np.abs(got - want).max() / np.abs(want).max())
    assert err < TOL
    assert np.array_equal(got.argmax(1), want.argmax(1))
    return err


@pytest.mark.parametrize("name", sorted(MODELS))
def test_shipped_models_match_hetcl(rt, fashion, name, tmp_path):
    model = randomise(build_model(name, SHAPE, 10, seed=1), seed=2)
    images, mean, std = fashion
    compare(rt, model, images[:IMAGES], tmp_path / f"{name}.onnx", mean, std)


def pixels(shape, n=37, seed=5):  # 37: not a multiple of BATCH, the last batch is padded
    return np.random.default_rng(seed).integers(0, 256, (n,) + shape, np.uint8)


def test_pools_sigmoid_batchnorm1d_and_dense_without_activation(rt, tmp_path):
    # 14x14 -> 6x6 -> 2x2: both pools drop the last row and column (no window leaves the image)
    model = randomise(hetcl.Sequential(
        [Conv2D(3, 4, 3, padding=1), Sigmoid(), AvgPool2D(3, stride=2), MaxPool2D(3, stride=2),
         Flatten(), Dense(16, 12), BatchNorm1D(12), Sigmoid(), Dense(12, 6), BatchNorm1D(6),
         Dense(6, 5)], seed=6, input_shape=(3, 14, 14)).build(), seed=7)
    compare(rt, model, pixels((3, 14, 14)), tmp_path / "m.onnx", mean=0.5, std=0.3)
    ops = [n.op_type for n in onnx.load(str(tmp_path / "m.onnx")).graph.node]
    assert ops == ["Mul", "Add", "Conv", "Sigmoid", "AveragePool", "MaxPool", "Flatten", "Gemm",
                   "BatchNormalization", "Sigmoid", "Gemm", "BatchNormalization", "Gemm"]


def test_dropout_is_left_out(rt, tmp_path):
    middle = hetcl.Sequential([Flatten(), Dense(64, 32), ReLU(), Dropout(0.5), Dense(32, 10)],
                              seed=8, input_shape=(1, 8, 8)).build()
    last = hetcl.Sequential([Flatten(), Dense(64, 10), Dropout(0.3)], seed=9,
                            input_shape=(1, 8, 8)).build()
    for i, model in enumerate((randomise(middle, 10), randomise(last, 11))):
        path = tmp_path / f"{i}.onnx"
        compare(rt, model, pixels((1, 8, 8)), path)
        ops = [n.op_type for n in onnx.load(str(path)).graph.node]
        assert "Dropout" not in ops
        assert ops[-1] == ("Gemm" if model is middle else "Identity")


def test_graph_with_three_way_add_and_unused_branch(rt, tmp_path):
    g = hetcl.Graph(seed=12)
    x = g.input((2, 6, 6))
    a, b = (g.add(Conv2D(2, 3, 3, padding=1), x) for _ in range(2))
    c = g.add(ReLU(), g.add(Conv2D(2, 3, 1), x))
    out = g.add(Dense(108, 4), g.add(Flatten(), g.add(Add(), a, b, c)))
    g.add(Dense(4, 2), out)  # after the output: not exported
    g.output(out)
    compare(rt, randomise(g.build(), 13), pixels((2, 6, 6)), tmp_path / "g.onnx")
    graph = onnx.load(str(tmp_path / "g.onnx")).graph
    assert "Sum" in [n.op_type for n in graph.node]
    assert [d.dim_value for d in graph.output[0].type.tensor_type.shape.dim][1:] == [4]
    assert not any(i.name.startswith("dense1.") for i in graph.initializer)


class Double(Layer):
    kind = "double"


class MyDense(Dense):
    pass


@pytest.mark.parametrize("layer", [Double(), MyDense(16, 16)], ids=["own", "subclass"])
def test_unknown_layer_is_one_line_error(layer, tmp_path):
    model = hetcl.Sequential([Flatten(), layer, Dense(16, 3)], input_shape=(1, 4, 4)).build()
    with pytest.raises(ExportError) as info:
        export_onnx(model, tmp_path / "m.onnx")
    message = str(info.value)
    assert "\n" not in message and isinstance(info.value, HetclError)
    assert f"'{layer.name}'" in message and type(layer).__name__ in message
    assert "Conv2D" in message and "BatchNorm2D" in message
    assert os.listdir(tmp_path) == []  # nothing written, no temporary file left


def test_metadata_round_trips(tmp_path):
    model = build_model("lenet5", (1, 28, 28), 4, seed=14)
    names = ["T-shirt/top", "Trouser", "Pull\u00f6ver", 'Dress "x"']
    path = export_onnx(model, tmp_path / "m.onnx", mean=0.2860405969887955,
                       std=0.3530242445149226, class_names=names,
                       metadata={"hetcl.model": "lenet5", "hetcl.version": hetcl.__version__})
    proto = onnx.load(str(path))
    props = {p.key: p.value for p in proto.metadata_props}
    assert json.loads(props["hetcl.class_names"]) == names
    assert float(props["hetcl.mean"]) == 0.2860405969887955
    assert float(props["hetcl.std"]) == 0.3530242445149226
    assert props["hetcl.input"] == ("float32 pixels 0..255, [N, C, H, W]; normalised inside "
                                    "the graph")
    assert props["hetcl.model"] == "lenet5" and props["hetcl.version"] == hetcl.__version__
    assert (proto.producer_name, proto.producer_version) == ("hetcl", hetcl.__version__)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert session.get_modelmeta().custom_metadata_map == props
    (given,), (out,) = session.get_inputs(), session.get_outputs()
    assert (given.name, given.shape, out.name, out.shape) == ("pixels", ["N", 1, 28, 28],
                                                              "logits", ["N", 4])


def test_bad_arguments_are_one_line_errors(tmp_path):
    model = build_model("mlp", (1, 28, 28), 3, seed=15)
    for kwargs, words in [({"class_names": ["a", "b"]}, "2 class names"),
                          ({"metadata": {"hetcl.mean": "0"}}, "hetcl.mean"),
                          ({"std": 0.0}, "std"), ({"opset": 7}, "opset 7")]:
        with pytest.raises(ExportError, match=words) as info:
            export_onnx(model, tmp_path / "m.onnx", **kwargs)
        assert "\n" not in str(info.value)
    with pytest.raises(ExportError, match="built"):
        export_onnx(hetcl.Sequential([Flatten()]), tmp_path / "m.onnx")
    assert os.listdir(tmp_path) == []


def test_missing_onnx_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "onnx", None)  # `import onnx` fails
    with pytest.raises(HetclError, match=r"pip install 'hetcl\[onnx\]'"):
        export_onnx(build_model("mlp", (1, 28, 28), 3, seed=16), tmp_path / "m.onnx")
