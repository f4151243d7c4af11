"""hetcl.training.data: the real Fashion-MNIST, round trips of IDX (raw, gz), CIFAR-10 and
CIFAR-100 files written here, class names and label types, one test per DataError (one line that
names the file / problem and the fix), and the per-epoch shuffling. Image folders:
test_image_folder.py."""
import gzip
import os

import numpy as np
import pytest

from hetcl.training import data
from hetcl.training.data import (DataError, Dataset, check_input_shape, load_dataset, read_idx,
                                 shuffled_batches)
from hetcl.errors import HetclError


def idx_bytes(array, code=0x08):
    """An IDX file of ``array`` (dtype code ``code``, big-endian data)."""
    dtype = np.dtype(data.IDX_TYPES[code])
    head = bytes([0, 0, code, array.ndim]) + np.array(array.shape, ">u4").tobytes()
    return head + np.ascontiguousarray(array, dtype).tobytes()


def write(path, blob, gz=False):
    with (gzip.open if gz else open)(path, "wb") as f:
        f.write(blob)
    return str(path)


def make_idx_set(directory, n_train=50, n_test=20, shape=(28, 28), gz=False, seed=0):
    """Four IDX files in ``directory``; returns the arrays written."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        arrays[split] = (rng.integers(0, 256, (n,) + shape, dtype=np.uint8),
                         rng.integers(0, 10, n, dtype=np.uint8))
        for kind, a in zip(("images", "labels"), arrays[split]):
            name = data.IDX_FILES[(split, kind)][0] + (".gz" if gz else "")
            write(os.path.join(directory, name), idx_bytes(a), gz)
    return arrays


def make_cifar(directory, n_per_file=7, seed=0, fmt=data.CIFAR10):
    """CIFAR-10 (or CIFAR-100, ``fmt``) binary files; -> {name: (images, labels)}, with the
    fine labels for CIFAR-100 (its coarse label byte is fine // 5)."""
    rng = np.random.default_rng(seed)
    os.makedirs(directory, exist_ok=True)
    out = {}
    for name in fmt.train + fmt.test:
        x = rng.integers(0, 256, (n_per_file, 3, 32, 32), dtype=np.uint8)
        y = rng.integers(0, fmt.classes, n_per_file, dtype=np.uint8)
        labels = [y[:, None]] if fmt.labels == 1 else [y[:, None] // 5, y[:, None]]
        write(os.path.join(directory, name),
              np.concatenate(labels + [x.reshape(n_per_file, -1)], axis=1).tobytes())
        out[name] = (x, y)
    return out


def raises(match_all, fn, *args):
    """Call fn, expect a one-line DataError containing every string of ``match_all``."""
    with pytest.raises(DataError) as info:
        fn(*args)
    message = str(info.value)
    assert isinstance(info.value, HetclError) and "\n" not in message, message
    for text in match_all:
        assert text in message, (text, message)
    return message


@pytest.mark.skipif(not os.path.isdir(data.DEFAULT_DATA_DIR),
                    reason="dataset-fashion-mnist is not installed")
def test_real_fashion_mnist():
    ds = load_dataset()
    assert ds.train_x.shape == (60000, 1, 28, 28) and ds.test_x.shape == (10000, 1, 28, 28)
    assert ds.train_x.dtype == ds.train_y.dtype == np.uint8
    assert ds.sample_shape == (1, 28, 28) and ds.classes == 10 and ds.from_cache is False
    assert ds.class_names == [str(i) for i in range(10)] and ds.val_x is None
    for y in (ds.train_y, ds.test_y):
        assert np.array_equal(np.bincount(y), np.full(10, len(y) // 10))  # balanced 0..9
    assert ds.train_y[:4].tolist() == [9, 0, 0, 3]  # the published first labels
    assert abs(ds.mean - 0.2860) < 1e-4 and abs(ds.std - 0.3530) < 1e-4
    check_input_shape(ds, (1, 28, 28))
    check_input_shape(ds, (784,))


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_idx_round_trip_all_types(tmp_path, gz):
    rng = np.random.default_rng(1)
    for code, dtype in data.IDX_TYPES.items():
        a = (rng.standard_normal((3, 4, 5)) * 100).astype(np.dtype(dtype).newbyteorder("="))
        back = read_idx(write(tmp_path / f"a{code}", idx_bytes(a, code), gz))
        assert back.dtype == a.dtype and back.dtype.isnative and np.array_equal(back, a)
    assert read_idx(write(tmp_path / "empty", idx_bytes(np.zeros(0, np.uint8)), gz)).shape == (0,)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_idx_dataset_round_trip(tmp_path, gz):
    arrays = make_idx_set(tmp_path, shape=(5, 7), gz=gz)
    ds = load_dataset(str(tmp_path))
    assert ds.name == tmp_path.name and ds.sample_shape == (1, 5, 7) and ds.classes == 10
    assert np.array_equal(ds.train_x[:, 0], arrays["train"][0])
    assert np.array_equal(ds.train_y, arrays["train"][1])
    assert np.array_equal(ds.test_x[:, 0], arrays["t10k"][0])
    assert np.array_equal(ds.test_y, arrays["t10k"][1])
    x = arrays["train"][0] / 255.0
    assert np.isclose(ds.mean, x.mean(), atol=1e-12) and np.isclose(ds.std, x.std(), atol=1e-12)


def test_idx_dot_spelling(tmp_path):
    rng = np.random.default_rng(2)
    for split, n in (("train", 6), ("t10k", 4)):
        write(tmp_path / f"{split}-images.idx3-ubyte",
              idx_bytes(rng.integers(0, 256, (n, 3, 3), dtype=np.uint8)))
        write(tmp_path / f"{split}-labels.idx1-ubyte.gz",
              idx_bytes(np.arange(n, dtype=np.uint8)), gz=True)
    ds = load_dataset(str(tmp_path))
    assert len(ds.train_y) == 6 and ds.test_y.tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize("sub", ["", "cifar-10-batches-bin"])
def test_cifar10_round_trip(tmp_path, sub):
    written = make_cifar(os.path.join(tmp_path, sub))
    ds = load_dataset(str(tmp_path))
    assert ds.name == "cifar-10" and ds.sample_shape == (3, 32, 32) and ds.classes == 10
    assert ds.class_names == [str(i) for i in range(10)]  # no batches.meta.txt here
    train = [written[n] for n in data.CIFAR_TRAIN]
    assert np.array_equal(ds.train_x, np.concatenate([x for x, _ in train]))
    assert np.array_equal(ds.train_y, np.concatenate([y for _, y in train]))
    assert np.array_equal(ds.test_x, written["test_batch.bin"][0])
    assert np.array_equal(ds.test_y, written["test_batch.bin"][1])
    assert ds.train_x.shape == (35, 3, 32, 32) and ds.test_x.shape == (7, 3, 32, 32)


CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                 "truck"]


def test_cifar10_class_names(tmp_path):
    make_cifar(tmp_path)
    write(tmp_path / "batches.meta.txt", ("\n".join(CIFAR10_NAMES) + "\n\n").encode())
    assert load_dataset(str(tmp_path)).class_names == CIFAR10_NAMES
    write(tmp_path / "batches.meta.txt", b"cat\ndog\n")
    raises([str(tmp_path / "batches.meta.txt"), "lists 2 class names", "10 classes"],
           load_dataset, str(tmp_path))


@pytest.mark.parametrize("sub", ["", "cifar-100-binary"])
def test_cifar100_round_trip(tmp_path, sub):
    folder = os.path.join(tmp_path, sub)
    written = make_cifar(folder, n_per_file=300, fmt=data.CIFAR100)
    names = [f"class{i:02d}" for i in range(100)]
    write(os.path.join(folder, "fine_label_names.txt"), ("\n".join(names) + "\n").encode())
    ds = load_dataset(str(tmp_path))
    assert ds.name == "cifar-100" and ds.classes == 100 and ds.class_names == names
    assert ds.sample_shape == (3, 32, 32) and ds.train_y.dtype == np.uint8
    for (x, y), (got_x, got_y) in ((written["train.bin"], (ds.train_x, ds.train_y)),
                                   (written["test.bin"], (ds.test_x, ds.test_y))):
        assert np.array_equal(got_x, x) and np.array_equal(got_y, y)  # the fine labels
    assert ds.train_y.max() >= 90  # labels past 10 were written and read


def test_cifar100_errors(tmp_path):
    make_cifar(tmp_path, fmt=data.CIFAR100)
    os.remove(tmp_path / "test.bin")
    raises(["CIFAR-100 file test.bin is missing", "train.bin, test.bin"], load_dataset,
           str(tmp_path))
    path = write(tmp_path / "test.bin", b"")
    raises([path, "is empty"], load_dataset, str(tmp_path))
    path = write(tmp_path / "test.bin", bytes(2 * 3074 - 1))
    raises([path, "truncated", "3074-byte records"], load_dataset, str(tmp_path))
    path = write(tmp_path / "test.bin", bytes([0, 100]) + bytes(3072))
    raises([path, "label 100", "100 classes"], load_dataset, str(tmp_path))


def test_idx_any_label_range(tmp_path):
    """EMNIST letters style: 26 classes, labels 0..25; classes from train and test together."""
    rng = np.random.default_rng(3)
    for split, n, top in (("train", 60, 24), ("t10k", 30, 25)):
        write(tmp_path / data.IDX_FILES[(split, "images")][0],
              idx_bytes(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)))
        labels = np.concatenate([np.arange(top + 1), rng.integers(0, top + 1, n - top - 1)])
        write(tmp_path / data.IDX_FILES[(split, "labels")][0], idx_bytes(labels.astype(np.uint8)))
    ds = load_dataset(str(tmp_path))
    assert ds.classes == 26 and ds.class_names == [str(i) for i in range(26)]
    assert ds.train_y.max() == 24 and ds.test_y.max() == 25 and ds.train_y.dtype == np.uint8


def test_image_size_only_matching_for_fixed_formats(tmp_path):
    make_idx_set(tmp_path)
    assert load_dataset(str(tmp_path), image_size=28).sample_shape == (1, 28, 28)
    raises([str(tmp_path), "(28, 28)", "drop --image-size 32"], load_dataset, str(tmp_path),
           32)


def test_dataset_classes_and_label_types():
    x = np.zeros((4, 1, 2, 2), np.uint8)
    ds = Dataset("d", x, np.array([0, 3, 1, 3]), x[:0], np.zeros(0, np.int64))
    assert ds.classes == 4 and ds.class_names == ["0", "1", "2", "3"]
    assert ds.train_y.dtype == np.uint8 and len(ds.test_y) == 0 and ds.val_y is None
    ds = Dataset("d", x, np.array([0, 1, 1, 0]), x, np.array([1, 0, 0, 1]), class_names=["a", "b"])
    assert ds.classes == 2 and ds.class_names == ["a", "b"]
    ds = Dataset("d", x, np.array([0, 299, 5, 256]), x[:1], np.array([7]), val_x=x[:2],
                 val_y=np.array([1, 2]))
    assert ds.classes == 300 and ds.train_y.dtype == ds.test_y.dtype == np.int32
    assert ds.val_y.dtype == np.int32 and ds.val_y.tolist() == [1, 2]
    assert Dataset("d", x, np.array([0, 0, 1, 1]), x, np.zeros(4), 256).train_y.dtype == np.uint8
    raises(["labels up to 3", "2 classes"], Dataset, "d", x, np.array([0, 3, 1, 3]), x,
           np.zeros(4), 2)
    raises(["3 class names", "2 classes"], Dataset, "d", x, np.zeros(4), x, np.zeros(4), 2,
           ["a", "b", "c"])


def test_with_validation_seeded_disjoint_covering():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (50, 1, 3, 3), dtype=np.uint8)
    x[:, 0, 0, 0] = np.arange(50)  # an id per image
    ds = Dataset("d", x, np.arange(50) % 5, x[:3], np.zeros(3))
    split = ds.with_validation(0.2, seed=7)
    ids_train, ids_val = split.train_x[:, 0, 0, 0], split.val_x[:, 0, 0, 0]
    assert len(ids_val) == 10 and len(ids_train) == 40
    assert sorted(np.concatenate([ids_train, ids_val]).tolist()) == list(range(50))
    assert np.array_equal(split.train_y, ids_train % 5)
    assert np.array_equal(split.val_y, ids_val % 5)
    assert list(ids_val) == sorted(ids_val)  # each part keeps the original order
    assert split.test_x is ds.test_x and split.classes == 5
    assert np.array_equal(ds.with_validation(0.2, seed=7).val_x, split.val_x)
    assert not np.array_equal(ds.with_validation(0.2, seed=8).val_x, split.val_x)
    order = np.random.default_rng([7, 0x5EED]).permutation(50)
    assert sorted(ids_val.tolist()) == sorted(order[:10].tolist())  # the documented seeding
    assert split.mean == pytest.approx((split.train_x / 255.0).mean())
    raises(["not between 0 and 1"], ds.with_validation, 1.0, 0)
    raises(["leaves 0 of 50", "at least 1"], ds.with_validation, 0.005, 0)
    raises(["leaves 50 of 50", "at least 1"], ds.with_validation, 0.995, 0)


# --- every DataError ---------------------------------------------------------------------

def test_error_directory_missing(tmp_path):
    raises([str(tmp_path / "nope"), "does not exist", "apt-get install dataset-fashion-mnist",
            "--data DIR"], load_dataset, str(tmp_path / "nope"))


def test_error_no_dataset_files(tmp_path):
    write(tmp_path / "readme.txt", b"hello")
    raises([str(tmp_path), "no dataset files", "apt-get install dataset-fashion-mnist",
            "--data DIR", "image folder", "CIFAR-100"], load_dataset, str(tmp_path))


def test_error_missing_one_idx_file(tmp_path):
    make_idx_set(tmp_path, gz=True)
    os.remove(tmp_path / "t10k-labels-idx1-ubyte.gz")
    raises(["missing t10k-labels-idx1-ubyte", "4 files"], load_dataset, str(tmp_path))


def test_error_missing_one_cifar_file(tmp_path):
    make_cifar(tmp_path)
    os.remove(tmp_path / "data_batch_3.bin")
    raises(["data_batch_3.bin is missing", str(tmp_path)], load_dataset, str(tmp_path))


def test_error_bad_magic(tmp_path):
    make_idx_set(tmp_path)
    path = write(tmp_path / "train-images-idx3-ubyte", b"\x12\x34\x08\x03" + bytes(100))
    raises([path, "bad magic number 0x12340803", "not an IDX file"], load_dataset, str(tmp_path))


def test_error_unsupported_dtype_code(tmp_path):
    path = write(tmp_path / "x", bytes([0, 0, 0x07, 1, 0, 0, 0, 1, 5]))
    raises([path, "unsupported IDX type code 0x07"], read_idx, path)


@pytest.mark.parametrize("gz", [False, True], ids=["raw", "gz"])
def test_error_truncated_idx(tmp_path, gz):
    make_idx_set(tmp_path, n_train=50, shape=(28, 28))
    blob = idx_bytes(np.zeros((50, 28, 28), np.uint8))
    path = write(tmp_path / "train-images-idx3-ubyte", blob[:-10], gz)
    raises([path, "truncated", f"expected {len(blob)} bytes", f"has {len(blob) - 10}",
            "download it again"], load_dataset, str(tmp_path))
    path = write(tmp_path / "short", bytes([0, 0, 8, 3, 0, 0]), gz)  # header cut short
    raises([path, "truncated", "header needs 16 bytes"], read_idx, path)


def test_error_damaged_gzip_stream(tmp_path):
    blob = gzip.compress(idx_bytes(np.zeros((50, 28, 28), np.uint8)))
    path = write(tmp_path / "a.gz", blob[: len(blob) // 2])
    raises([path, "damaged gzip file", "download it again"], read_idx, path)


def test_error_trailing_garbage(tmp_path):
    path = write(tmp_path / "x", idx_bytes(np.arange(6, dtype=np.uint8)) + b"junk")
    raises([path, "4 bytes after the data", "expected 14 bytes"], read_idx, path)


def test_error_truncated_cifar(tmp_path):
    make_cifar(tmp_path)
    path = str(tmp_path / "test_batch.bin")
    with open(path, "r+b") as f:
        f.truncate(3 * data.CIFAR_RECORD - 1)
    raises([path, "truncated", f"{3 * data.CIFAR_RECORD - 1} bytes", "3073-byte records"],
           load_dataset, str(tmp_path))


def test_error_count_mismatch(tmp_path):
    make_idx_set(tmp_path, n_train=50)
    path = write(tmp_path / "train-labels-idx1-ubyte", idx_bytes(np.zeros(49, np.uint8)))
    raises(["has 50 images", f"{path} has 49 labels"], load_dataset, str(tmp_path))


def test_error_labels_out_of_range(tmp_path):
    """IDX labels set the number of classes (largest + 1) but may not be negative; CIFAR-10
    has 10 classes."""
    make_idx_set(tmp_path, n_test=20)
    labels = np.zeros(20, np.uint8)
    labels[7] = 12
    write(tmp_path / "t10k-labels-idx1-ubyte", idx_bytes(labels))
    assert load_dataset(str(tmp_path)).classes == 13
    path = write(tmp_path / "t10k-labels-idx1-ubyte", idx_bytes(labels.astype(np.int8) - 1, 0x09))
    raises([path, "label -1", "class indices"], load_dataset, str(tmp_path))
    cifar = tmp_path / "c"
    make_cifar(cifar)
    with open(cifar / "data_batch_2.bin", "r+b") as f:
        f.seek(data.CIFAR_RECORD)  # label byte of the second record
        f.write(bytes([10]))
    raises([str(cifar / "data_batch_2.bin"), "label 10", "10 classes"], load_dataset, str(cifar))


def test_error_labels_file_in_images_slot(tmp_path):
    make_idx_set(tmp_path)
    path = write(tmp_path / "train-images-idx3-ubyte", idx_bytes(np.zeros(50, np.uint8)))
    raises([path, "not uint8 images"], load_dataset, str(tmp_path))


def test_error_wrong_image_size_for_model(tmp_path):
    make_cifar(tmp_path)
    ds = load_dataset(str(tmp_path))
    check_input_shape(ds, (3, 32, 32))
    check_input_shape(ds, (3072,))
    raises(["wrong image size", "expects (1, 28, 28)", "(3, 32, 32)", "--data DIR"],
           check_input_shape, ds, (1, 28, 28))


# --- shuffling ---------------------------------------------------------------------------

def test_shuffled_batches_deterministic_and_covering():
    batches = shuffled_batches(1000, 64, seed=5, epoch=3)
    assert [len(b) for b in batches] == [64] * 15 + [40]      # last partial batch kept
    assert all(b.dtype == np.int32 for b in batches)
    order = np.concatenate(batches)
    assert np.array_equal(np.sort(order), np.arange(1000))     # each sample exactly once
    again = shuffled_batches(1000, 64, seed=5, epoch=3)        # a resumed run: same order
    assert all(np.array_equal(a, b) for a, b in zip(batches, again))
    for other in (shuffled_batches(1000, 64, 5, 4), shuffled_batches(1000, 64, 6, 3)):
        assert not np.array_equal(np.concatenate(other), order)
    assert not np.array_equal(order, np.arange(1000))


def test_shuffled_batches_drop_last_and_edges():
    batches = shuffled_batches(1000, 64, 5, 3, drop_last=True)
    assert [len(b) for b in batches] == [64] * 15
    full = np.concatenate(shuffled_batches(1000, 64, 5, 3))
    assert np.array_equal(np.concatenate(batches), full[:960])  # same order, tail dropped
    assert [len(b) for b in shuffled_batches(128, 64, 0, 0)] == [64, 64]
    assert shuffled_batches(0, 64, 0, 0) == [] and shuffled_batches(10, 64, 0, 0, True) == []
    with pytest.raises(ValueError):
        shuffled_batches(10, 0, 0, 0)
