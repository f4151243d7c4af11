"""The Python API refuses bad labels, indices, images and batches with a one-line HetclError
before any kernel runs (hetcl/model/inputs.py), and data files that hold no images or do not match
each other (hetcl/training/data.py). Each runtime test checks that the refused call changed nothing."""
import numpy as np
import pytest

import hetcl
from hetcl.training import data
from hetcl.errors import HetclError, InputError, ShapeError
from hetcl.model.models import build_model
from hetcl.model.optim import SGD
from conftest import DEVICES
from test_data import idx_bytes, make_cifar, make_idx_set, raises, write

N = 32     # resident set size
BATCH = 8


@pytest.fixture(scope="module")
def setup():
    """A runtime on one device and an mlp that took one valid step (so its parameters live on
    the device). The checks run on the host before a device is chosen: one device shows them."""
    if not DEVICES:
        pytest.skip("no OpenCL device")
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (N, 1, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, N, dtype=np.uint8)
    rt, model, opt = hetcl.Runtime([DEVICES[0]]), build_model("mlp", (1, 28, 28), 10, 0), SGD(0.1)
    loss = rt.train_step_indices(model, opt, images, labels, np.arange(BATCH), 0.3, 0.3)
    assert np.isfinite(loss)
    return rt, model, opt, images, labels


def batch(n=BATCH, labels=None):
    x = np.random.default_rng(1).standard_normal((n, 1, 28, 28)).astype(np.float32)
    return x, np.arange(n) % 10 if labels is None else np.asarray(labels)


def refused(setup, error, texts, call, *args, **kwargs):
    """call(...) raises a one-line `error` naming every one of `texts`; the parameters and the
    runtime's step count are as before."""
    rt, model = setup[0], setup[1]
    before, steps = model.parameters(), rt.steps
    with pytest.raises(error) as info:
        call(*args, **kwargs)
    message = str(info.value)
    assert isinstance(info.value, HetclError) and "\n" not in message, message
    for text in texts:
        assert text in message, (text, message)
    after = model.parameters()
    assert rt.steps == steps and all(np.array_equal(before[k], after[k]) for k in before)
    return message


# --- numpy batches: train_step and gradients ---------------------------------------------

@pytest.mark.parametrize("bad", [10, -1, 2 ** 30, -2 ** 30])
@pytest.mark.parametrize("method", ["train_step", "gradients"])
def test_labels_outside_the_classes(setup, method, bad):
    rt, model, opt = setup[:3]
    x, y = batch()
    y[5] = bad
    args = (model, opt, x, y) if method == "train_step" else (model, x, y)
    refused(setup, InputError, ["[0, 10)", str(bad)], getattr(rt, method), *args)


def test_float_labels(setup):
    """Integral floats are class indices; a fraction is an error that names it."""
    rt, model, opt = setup[:3]
    x, y = batch()
    refused(setup, InputError, ["2.5", "position 3", "integral"], rt.train_step, model, opt, x,
            np.where(np.arange(BATCH) == 3, 2.5, 1.0))
    refused(setup, InputError, ["nan"], rt.gradients, model, x, np.full(BATCH, np.nan))
    loss, _ = rt.gradients(model, x, y.astype(np.float32))
    assert np.isfinite(loss) and loss == rt.gradients(model, x, y)[0]


def test_labels_shape(setup):
    rt, model, opt = setup[:3]
    x, y = batch()
    refused(setup, ShapeError, ["8 class indices", "(7,)"], rt.train_step, model, opt, x, y[:7])
    refused(setup, ShapeError, ["(8, 10)", "argmax"], rt.train_step, model, opt, x,
            np.eye(10)[y])


def test_batch_shape_and_values(setup):
    rt, model, opt = setup[:3]
    x, y = batch()
    refused(setup, ShapeError, ["(1, 28, 27)", "(1, 28, 28)"], rt.train_step, model, opt,
            x[..., :27], y)
    refused(setup, ShapeError, ["non-empty", "(0, 1, 28, 28)"], rt.train_step, model, opt,
            x[:0], y[:0])
    x[6, 0, 3, 3] = np.inf
    refused(setup, InputError, ["NaN or inf", "sample 6"], rt.train_step, model, opt, x, y)


# --- resident sets: train_step_indices and evaluate_indices ------------------------------

@pytest.mark.parametrize("bad", [N, -1, 2 ** 30])
def test_indices_outside_the_set(setup, bad):
    rt, model, opt, images, labels = setup
    idx = np.arange(BATCH)
    idx[2] = bad
    refused(setup, InputError, [f"[0, {N})", str(bad)], rt.train_step_indices, model, opt,
            images, labels, idx)


def test_indices_dtype_and_shape(setup):
    rt, model, opt, images, labels = setup
    refused(setup, InputError, ["integers", "float64"], rt.train_step_indices, model, opt,
            images, labels, np.arange(BATCH, dtype=np.float64))
    refused(setup, InputError, ["integers", "bool"], rt.train_step_indices, model, opt,
            images, labels, np.arange(N) < BATCH)
    refused(setup, ShapeError, ["non-empty 1-D", "(0,)"], rt.train_step_indices, model, opt,
            images, labels, np.arange(0))
    refused(setup, ShapeError, ["non-empty 1-D", "(2, 4)"], rt.train_step_indices, model, opt,
            images, labels, np.arange(BATCH).reshape(2, 4))


def test_float_images(setup):
    """The resident path takes uint8 pixels: float images would be cast to zeros."""
    rt, model, opt, images, labels = setup
    floats = images / 255.0
    refused(setup, InputError, ["uint8", "float64"], rt.train_step_indices, model, opt, floats,
            labels, np.arange(BATCH))
    refused(setup, InputError, ["uint8", "float64"], rt.evaluate_indices, model, floats, labels)


def test_resident_labels(setup):
    rt, model, opt, images, labels = setup
    refused(setup, ShapeError, [f"{N} class indices", f"({N - 1},)"], rt.train_step_indices,
            model, opt, images, labels[:-1], np.arange(BATCH))
    bad = labels.copy()
    bad[N - 1] = 10  # outside the batch: the whole set is checked, once
    refused(setup, InputError, ["[0, 10)", "to 10"], rt.train_step_indices, model, opt, images,
            bad, np.arange(BATCH))
    refused(setup, InputError, ["[0, 10)", "to 10"], rt.evaluate_indices, model, images, bad)


def test_resident_labels_against_each_model(setup):
    """A set checked once is still checked against every model's classes; labels past 255
    (kept as int32 on the device) train a model with that many classes."""
    rt, _, _, images, labels = setup
    five = build_model("mlp", (1, 28, 28), 5, 0)
    with pytest.raises(InputError, match=r"\[0, 5\).*to 9"):
        rt.train_step_indices(five, SGD(0.1), images, labels, np.arange(BATCH))
    many = build_model("mlp", (1, 28, 28), 300, 0)
    wide = np.where(np.arange(N) == 4, 299, 0)
    logits = rt.forward(many, images[:BATCH].astype(np.float32) / 255).astype(np.float64)
    logp = logits - logits.max(1, keepdims=True)
    logp -= np.log(np.exp(logp).sum(1, keepdims=True))
    expected = -logp[np.arange(BATCH), wide[:BATCH]].mean()  # the step's loss, before its update
    loss = rt.train_step_indices(many, SGD(0.1), images, wide, np.arange(BATCH))
    assert abs(loss - expected) < 1e-5 * expected


def test_a_valid_step_after_refusals(setup):
    rt, model, opt, images, labels = setup
    before = model.parameters()
    assert np.isfinite(rt.train_step_indices(model, opt, images, labels, np.arange(N - BATCH, N)))
    assert not np.array_equal(before["dense0.weight"], model.parameters()["dense0.weight"])
    assert rt.evaluate_indices(model, images, labels, batch_size=BATCH).shape == (N,)


# --- data files --------------------------------------------------------------------------

@pytest.mark.parametrize("split", ["train", "t10k"])
def test_empty_idx_set(tmp_path, split):
    make_idx_set(tmp_path)
    images = write(tmp_path / data.IDX_FILES[(split, "images")][0],
                   idx_bytes(np.zeros((0, 28, 28), np.uint8)))
    write(tmp_path / data.IDX_FILES[(split, "labels")][0], idx_bytes(np.zeros(0, np.uint8)))
    raises([images, "holds no images"], data.load_dataset, str(tmp_path))


def test_empty_cifar_file(tmp_path):
    make_cifar(tmp_path)
    path = write(tmp_path / "data_batch_3.bin", b"")
    raises([path, "is empty"], data.load_dataset, str(tmp_path))


def test_more_labels_than_images(tmp_path):
    make_idx_set(tmp_path, n_test=20)
    labels = write(tmp_path / "t10k-labels-idx1-ubyte", idx_bytes(np.zeros(21, np.uint8)))
    images = str(tmp_path / "t10k-images-idx3-ubyte")
    raises([f"{images} has 20 images", f"{labels} has 21 labels"], data.load_dataset,
           str(tmp_path))
