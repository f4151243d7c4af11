"""Image-classification datasets on the host: IDX (MNIST, Fashion-MNIST, KMNIST) and CIFAR-10
binary files, read into uint8 arrays [n, C, H, W]; the per-epoch shuffling of a training run.

Images stay uint8 (Fashion-MNIST's train set is 47 MB): they are uploaded once to each device
and normalised there by the gather kernel (hetcl/codegen/gather.py) with the dataset's mean/std.
Every problem with the data is a DataError whose one-line message names the file and the fix.
numpy only: no OpenCL here.
"""
import gzip
import os
import zlib

import numpy as np

from ..errors import HetclError

DEFAULT_DATA_DIR = "/usr/share/datasets/fashion-mnist"
CLASSES = 10  # MNIST, Fashion-MNIST, KMNIST and CIFAR-10 all have 10 classes
INSTALL_HINT = ("`apt-get install dataset-fashion-mnist` for Fashion-MNIST, or pass --data DIR "
                "with MNIST-style IDX files or CIFAR-10 binary files")

# IDX header: 2 zero bytes, a type code, the number of dimensions, then each dimension as a
# big-endian uint32; the data follows, big-endian, row-major. Type codes from the IDX spec.
IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
             0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
# Accepted spellings of the four IDX files (".gz" optional): the LeCun/Zalando names and the
# "train-images.idx3-ubyte" variant that some mirrors and Kaggle use.
IDX_FILES = {(split, kind): [f"{split}-{kind}-{idx}-ubyte", f"{split}-{kind}.{idx}-ubyte"]
             for split in ("train", "t10k")
             for kind, idx in (("images", "idx3"), ("labels", "idx1"))}
# CIFAR-10 binary version: records of 1 label byte + 3072 pixel bytes (1024 R, 1024 G, 1024 B,
# each plane row-major 32x32), 10000 records per file.
CIFAR_TRAIN = [f"data_batch_{i}.bin" for i in range(1, 6)]
CIFAR_TEST = ["test_batch.bin"]
CIFAR_SHAPE = (3, 32, 32)
CIFAR_RECORD = 1 + 3 * 32 * 32


class DataError(HetclError):
    """The dataset is missing, damaged or does not fit the model (one-line message)."""


def _read_bytes(path):
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror}") from None
    if blob[:2] == b"\x1f\x8b":  # gzip magic: decompress whatever the file is named
        try:
            blob = gzip.decompress(blob)
        except (OSError, EOFError, zlib.error) as e:
            raise DataError(f"{path} is a damaged gzip file ({e}): download it again") from None
    return blob


def read_idx(path):
    """The array stored in an IDX file (raw or gzip-compressed), in native byte order."""
    blob = _read_bytes(path)
    if len(blob) < 4 or blob[0] != 0 or blob[1] != 0 or blob[3] == 0:
        raise DataError(f"{path} has a bad magic number 0x{blob[:4].hex():0>8}: it is not an IDX "
                        f"file (expected e.g. 0x00000803 images, 0x00000801 labels)")
    code, ndim = blob[2], blob[3]
    if code not in IDX_TYPES:
        raise DataError(f"{path} has the unsupported IDX type code 0x{code:02X} (known: "
                        f"{', '.join(f'0x{c:02X}' for c in IDX_TYPES)}): not an IDX file?")
    dtype = np.dtype(IDX_TYPES[code])
    header = 4 + 4 * ndim
    if len(blob) < header:
        raise DataError(f"{path} is truncated: its header needs {header} bytes, the file has "
                        f"{len(blob)}: download it again")
    shape = tuple(int(d) for d in np.frombuffer(blob, ">u4", ndim, 4))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(blob) < expected:
        raise DataError(f"{path} is truncated: expected {expected} bytes for shape {shape}, "
                        f"the file has {len(blob)}: download it again")
    if len(blob) > expected:
        raise DataError(f"{path} has {len(blob) - expected} bytes after the data (expected "
                        f"{expected} bytes for shape {shape}): damaged file, download it again")
    data = np.frombuffer(blob, dtype, int(np.prod(shape, dtype=np.int64)), header)
    return data.reshape(shape).astype(dtype.newbyteorder("="))  # a writable native copy


def read_cifar10(directory):
    """-> (train_x, train_y, test_x, test_y): images uint8 [n, 3, 32, 32], labels uint8 [n]."""
    out = []
    for names in (CIFAR_TRAIN, CIFAR_TEST):
        xs, ys = [], []
        for name in names:
            path = os.path.join(directory, name)
            if not os.path.isfile(path):
                raise DataError(f"CIFAR-10 file {name} is missing from {directory}: it needs "
                                f"{', '.join(CIFAR_TRAIN + CIFAR_TEST)}")
            blob = _read_bytes(path)
            if len(blob) == 0:
                raise DataError(f"{path} is empty: it holds no images, download it again")
            if len(blob) % CIFAR_RECORD:
                raise DataError(f"{path} is truncated: {len(blob)} bytes is not a whole number "
                                f"of {CIFAR_RECORD}-byte records (1 label + 3072 pixels): "
                                f"download it again")
            records = np.frombuffer(blob, np.uint8).reshape(-1, CIFAR_RECORD)
            ys.append(records[:, 0].copy())
            xs.append(records[:, 1:].reshape((-1,) + CIFAR_SHAPE).copy())
            _check_labels(ys[-1], path)
        out += [np.concatenate(xs), np.concatenate(ys)]
    return tuple(out)


def _check_labels(labels, path):
    if labels.size and int(labels.max()) >= CLASSES:
        raise DataError(f"{path} has label {int(labels.max())} but the dataset has {CLASSES} "
                        f"classes (0..{CLASSES - 1}): wrong or damaged label file")


class Dataset:
    """train_x/test_x uint8 [n, C, H, W], train_y/test_y uint8 [n]; mean/std of train_x/255
    (float, over all pixels and channels) for the normalisation x = (v/255 - mean)/std."""

    def __init__(self, name, train_x, train_y, test_x, test_y, classes=CLASSES):
        self.name, self.classes = name, int(classes)
        self.train_x, self.train_y, self.test_x, self.test_y = train_x, train_y, test_x, test_y
        self.sample_shape = tuple(int(s) for s in train_x.shape[1:])
        # Exact: statistics of the 256-bin histogram, in float64. Counted in chunks because
        # bincount widens its input to int64 (8x the 47 MB of Fashion-MNIST at once).
        flat, counts = train_x.reshape(-1), np.zeros(256)
        for start in range(0, flat.size, 1 << 20):
            counts += np.bincount(flat[start:start + (1 << 20)], minlength=256)
        values = np.arange(256) / 255.0
        total = max(counts.sum(), 1.0)
        self.mean = float(counts @ values / total)
        self.std = float(np.sqrt(counts @ (values - self.mean) ** 2 / total))

    def __repr__(self):
        return (f"Dataset({self.name}: train {len(self.train_y)}, test {len(self.test_y)}, "
                f"shape {self.sample_shape}, {self.classes} classes)")


def _find_idx(directory):
    """{(split, kind): path or None} for the four IDX files."""
    found = {}
    for key, names in IDX_FILES.items():
        hits = [os.path.join(directory, n + gz) for n in names for gz in ("", ".gz")]
        found[key] = next((p for p in hits if os.path.isfile(p)), None)
    return found


def _load_idx(directory, found):
    missing = [names[0] + "[.gz]" for key, names in IDX_FILES.items() if found[key] is None]
    if missing:
        raise DataError(f"IDX dataset in {directory} is missing {', '.join(missing)}: it needs "
                        f"train/t10k images and labels (4 files)")
    arrays = {}
    for split in ("train", "t10k"):
        images, labels = found[(split, "images")], found[(split, "labels")]
        x, y = read_idx(images), read_idx(labels)
        if x.ndim != 3 or x.dtype != np.uint8:
            raise DataError(f"{images} holds {x.dtype} {x.shape}, not uint8 images [n, rows, "
                            f"cols]: is it an image file?")
        if y.ndim != 1 or y.dtype != np.uint8:
            raise DataError(f"{labels} holds {y.dtype} {y.shape}, not uint8 labels [n]: "
                            f"is it a label file?")
        if len(x) != len(y):
            raise DataError(f"{images} has {len(x)} images but {labels} has {len(y)} labels: "
                            f"the files come from different sets or one is damaged")
        if x.size == 0:  # nothing to train on or to evaluate
            raise DataError(f"{images} holds no images (shape {x.shape}): an empty or damaged "
                            f"file, download it again")
        _check_labels(y, labels)
        arrays[split] = (x[:, None], y)  # [n, 1, rows, cols]: one channel
    if arrays["train"][0].shape[1:] != arrays["t10k"][0].shape[1:]:
        raise DataError(f"train images are {arrays['train'][0].shape[2:]} but test images are "
                        f"{arrays['t10k'][0].shape[2:]} in {directory}: mixed datasets")
    return arrays["train"] + arrays["t10k"]


def load_dataset(path=None):
    """The dataset in directory ``path`` (default: Debian's Fashion-MNIST, DEFAULT_DATA_DIR):
    four IDX files, or CIFAR-10 binary files (there or in a cifar-10-batches-bin subfolder)."""
    directory = os.path.abspath(path or DEFAULT_DATA_DIR)
    if not os.path.isdir(directory):
        what = "is not a directory" if os.path.exists(directory) else "does not exist"
        raise DataError(f"data directory {directory} {what}: {INSTALL_HINT}")
    found = _find_idx(directory)
    name = os.path.basename(directory.rstrip(os.sep)) or directory
    if any(found.values()):
        return Dataset(name, *_load_idx(directory, found))
    for sub in (directory, os.path.join(directory, "cifar-10-batches-bin")):
        if any(os.path.isfile(os.path.join(sub, n)) for n in CIFAR_TRAIN + CIFAR_TEST):
            return Dataset("cifar-10", *read_cifar10(sub))
    raise DataError(f"no dataset files in {directory} (looked for train-images-idx3-ubyte[.gz] "
                    f"and CIFAR-10 data_batch_1.bin): {INSTALL_HINT}")


def check_input_shape(dataset, shape):
    """Raise a DataError unless the model's input ``shape`` (C, H, W), or its flat (C*H*W,)
    for a fully connected model, takes the dataset's images."""
    shape = tuple(int(s) for s in shape)
    flat = (int(np.prod(dataset.sample_shape)),)
    if shape not in (dataset.sample_shape, flat):
        raise DataError(f"wrong image size for the model: it expects {shape} but "
                        f"{dataset.name} images are {dataset.sample_shape} (C, H, W): pick a "
                        f"model for this data or other data (--data DIR)")


def shuffled_batches(n, batch_size, seed, epoch, drop_last=False):
    """Index arrays (int32) of the mini-batches of one epoch over ``n`` samples.

    The permutation depends only on (seed, epoch), so a run resumed at an epoch sees the same
    order. The last, partial batch is kept unless ``drop_last``."""
    n, batch_size = int(n), int(batch_size)
    if n < 0 or n >= 2 ** 31 or batch_size < 1:
        raise ValueError(f"shuffled_batches: need 0 <= n < 2**31 and batch_size >= 1, got "
                         f"n={n}, batch_size={batch_size}")
    order = np.random.default_rng([int(seed), int(epoch)]).permutation(n).astype(np.int32)
    end = n - n % batch_size if drop_last else n
    return [order[i:i + batch_size] for i in range(0, end, batch_size)]
