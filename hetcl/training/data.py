"""Image-classification datasets on the host: IDX (MNIST, Fashion-MNIST, EMNIST, KMNIST),
CIFAR-10 and CIFAR-100 binary files and image folders (image_folder.py), read into uint8 arrays
[n, C, H, W] with their labels and class names; the per-epoch shuffling of a training run.

Images stay uint8 (Fashion-MNIST's train set is 47 MB): they are uploaded once to each device
and normalised there by the gather kernel (hetcl/codegen/gather.py) with the dataset's mean/std.
Every problem with the data is a DataError whose one-line message names the file and the fix.
numpy only (image_folder.py adds Pillow): no OpenCL here.
"""
import collections
import gzip
import os
import zlib

import numpy as np

from ..errors import HetclError

DEFAULT_DATA_DIR = "/usr/share/datasets/fashion-mnist"
INSTALL_HINT = ("`apt-get install dataset-fashion-mnist` for Fashion-MNIST, or pass --data DIR "
                "with MNIST-style IDX files, CIFAR-10/100 binary files or an image folder "
                "(DIR/<class>/*.png|jpg)")

# IDX header: 2 zero bytes, a type code, the number of dimensions, then each dimension as a
# big-endian uint32; the data follows, big-endian, row-major. Type codes from the IDX spec.
IDX_TYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: np.dtype(">i2"), 0x0C: np.dtype(">i4"),
             0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
# Accepted spellings of the four IDX files (".gz" optional): the LeCun/Zalando names and the
# "train-images.idx3-ubyte" variant that some mirrors and Kaggle use.
IDX_FILES = {(split, kind): [f"{split}-{kind}-{idx}-ubyte", f"{split}-{kind}.{idx}-ubyte"]
             for split in ("train", "t10k")
             for kind, idx in (("images", "idx3"), ("labels", "idx1"))}
# CIFAR binary versions: each record is its label byte(s), then 3072 pixel bytes (1024 R,
# 1024 G, 1024 B, each plane row-major 32x32). CIFAR-10 has 1 label byte; CIFAR-100 has a
# coarse and a fine one, and the fine one (100 classes) is used. `names` lists the class
# names, one a line, where the download has it.
CifarFormat = collections.namedtuple("CifarFormat", "title sub train test labels classes names")
CIFAR10 = CifarFormat("CIFAR-10", "cifar-10-batches-bin", [f"data_batch_{i}.bin" for i in
                      range(1, 6)], ["test_batch.bin"], 1, 10, "batches.meta.txt")
CIFAR100 = CifarFormat("CIFAR-100", "cifar-100-binary", ["train.bin"], ["test.bin"], 2, 100,
                       "fine_label_names.txt")
CIFAR_TRAIN, CIFAR_TEST = CIFAR10.train, CIFAR10.test
CIFAR_SHAPE = (3, 32, 32)
CIFAR_RECORD = 1 + 3 * 32 * 32  # CIFAR-10's; CIFAR-100's is one byte longer


class DataError(HetclError):
    """The dataset is missing, damaged or does not fit the model (one-line message)."""


class DataWarning(UserWarning):
    """A file of the dataset was skipped or a cache rebuilt (one-line message naming it)."""


def label_dtype(classes):
    """uint8 labels up to 256 classes, int32 beyond (the gather kernel takes either)."""
    return np.dtype(np.uint8 if classes <= 256 else np.int32)


def read_bytes(path):
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
    blob = read_bytes(path)
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


def read_cifar(directory, fmt=CIFAR10):
    """-> (train_x, train_y, test_x, test_y, classes, class_names or None) of the CIFAR-10 or
    CIFAR-100 (``fmt``) files in ``directory``: images uint8 [n, 3, 32, 32], labels uint8 [n]."""
    out, record = [], fmt.labels + 3 * 32 * 32
    for names in (fmt.train, fmt.test):
        xs, ys = [], []
        for name in names:
            path = os.path.join(directory, name)
            if not os.path.isfile(path):
                raise DataError(f"{fmt.title} file {name} is missing from {directory}: it needs "
                                f"{', '.join(fmt.train + fmt.test)}")
            blob = read_bytes(path)
            if len(blob) == 0:
                raise DataError(f"{path} is empty: it holds no images, download it again")
            if len(blob) % record:
                raise DataError(f"{path} is truncated: {len(blob)} bytes is not a whole number "
                                f"of {record}-byte records ({fmt.title}): download it again")
            records = np.frombuffer(blob, np.uint8).reshape(-1, record)
            ys.append(records[:, fmt.labels - 1].copy())  # the last label byte: the fine one
            xs.append(records[:, fmt.labels:].reshape((-1,) + CIFAR_SHAPE).copy())
            if int(ys[-1].max()) >= fmt.classes:
                raise DataError(f"{path} has label {int(ys[-1].max())} but {fmt.title} has "
                                f"{fmt.classes} classes: wrong or damaged file, download it again")
        out += [np.concatenate(xs), np.concatenate(ys)]
    return tuple(out) + (fmt.classes, _class_names(os.path.join(directory, fmt.names), fmt))


def _class_names(path, fmt):
    if not os.path.isfile(path):
        return None
    text = read_bytes(path).decode("utf-8", "replace")
    names = [n for n in map(str.strip, text.split("\n")) if n]
    if len(names) != fmt.classes:
        raise DataError(f"{path} lists {len(names)} class names but {fmt.title} has "
                        f"{fmt.classes} classes: damaged file, download it again or delete it")
    return names


def _pixel_stats(x):
    """(mean, std) of x/255 over all pixels and channels, exact: the statistics of the 256-bin
    histogram in float64, counted in chunks because bincount widens its input to int64."""
    flat, counts = x.reshape(-1), np.zeros(256)
    for start in range(0, flat.size, 1 << 20):
        counts += np.bincount(flat[start:start + (1 << 20)], minlength=256)
    values = np.arange(256) / 255.0
    total = max(counts.sum(), 1.0)
    mean = float(counts @ values / total)
    return mean, float(np.sqrt(counts @ (values - mean) ** 2 / total))


class Dataset:
    """train_x/test_x/val_x uint8 [n, C, H, W], labels [n] uint8 (int32 over 256 classes); test
    may be empty, val is None unless there is a validation part; mean/std of train_x/255 for
    x = (v/255 - mean)/std; from_cache: whether the images came from a cache, not decoding."""
    from_cache = False

    def __init__(self, name, train_x, train_y, test_x, test_y, classes=None, class_names=None,
                 val_x=None, val_y=None):
        labels = [y for y in (train_y, test_y, val_y) if y is not None and len(y)]
        top = max((int(y.max()) for y in labels), default=0)
        if classes is None:
            classes = len(class_names) if class_names is not None else top + 1
        class_names = [str(i) for i in range(classes)] if class_names is None else class_names
        if len(class_names) != classes or top >= classes or any(y.min() < 0 for y in labels):
            raise DataError(f"{name} has labels up to {top} and {len(class_names)} class names "
                            f"for {classes} classes: labels must be 0..classes-1, one name each")
        self.name, self.classes, self.class_names = name, int(classes), list(class_names)
        dtype = label_dtype(self.classes)
        self.train_x, self.test_x, self.val_x = train_x, test_x, val_x
        self.train_y, self.test_y, self.val_y = (None if y is None else y.astype(dtype, copy=False)
                                                 for y in (train_y, test_y, val_y))
        self.sample_shape = tuple(int(s) for s in train_x.shape[1:])
        self.mean, self.std = _pixel_stats(train_x)

    def with_validation(self, fraction, seed):
        """A new Dataset whose val part is a seeded random ``fraction`` of the training images
        and whose train part is the rest (both in their original order)."""
        n, fraction = len(self.train_y), float(fraction)
        if self.val_y is not None:
            raise DataError(f"{self.name} already has a validation part (a val/ folder): drop "
                            f"the validation fraction or that folder")
        if not 0 < fraction < 1:
            raise DataError(f"validation fraction {fraction} is not between 0 and 1: pass e.g. "
                            f"0.1 for 10% of the training images")
        n_val = int(round(fraction * n))
        if not 0 < n_val < n:
            raise DataError(f"a validation fraction of {fraction} leaves {n_val} of {n} training "
                            f"images for validation: each part needs at least 1, pick another")
        order = np.random.default_rng([int(seed), 0x5EED]).permutation(n)
        val, train = np.sort(order[:n_val]), np.sort(order[n_val:])
        split = Dataset(self.name, self.train_x[train], self.train_y[train], self.test_x,
                        self.test_y, self.classes, self.class_names, self.train_x[val],
                        self.train_y[val])
        split.from_cache = self.from_cache
        return split

    def __repr__(self):
        val = "" if self.val_y is None else f", val {len(self.val_y)}"
        return (f"Dataset({self.name}: train {len(self.train_y)}{val}, test {len(self.test_y)}, "
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
        if y.ndim != 1 or y.dtype.kind not in "iu":
            raise DataError(f"{labels} holds {y.dtype} {y.shape}, not integer labels [n]: "
                            f"is it a label file?")
        if len(x) != len(y):
            raise DataError(f"{images} has {len(x)} images but {labels} has {len(y)} labels: "
                            f"the files come from different sets or one is damaged")
        if x.size == 0:  # nothing to train on or to evaluate
            raise DataError(f"{images} holds no images (shape {x.shape}): an empty or damaged "
                            f"file, download it again")
        if y.min() < 0:
            raise DataError(f"{labels} has the label {int(y.min())}: labels are class indices "
                            f"0, 1, ...: wrong or damaged label file")
        arrays[split] = (x[:, None], y)  # [n, 1, rows, cols]: one channel
    if arrays["train"][0].shape[1:] != arrays["t10k"][0].shape[1:]:
        raise DataError(f"train images are {arrays['train'][0].shape[2:]} but test images are "
                        f"{arrays['t10k'][0].shape[2:]} in {directory}: mixed datasets")
    return arrays["train"] + arrays["t10k"]  # classes: the largest label + 1


def _find_cifar(directory):
    """(format, folder) of the CIFAR files in ``directory`` or its usual sub-folder, or None."""
    for fmt in (CIFAR10, CIFAR100):
        for sub in (directory, os.path.join(directory, fmt.sub)):
            if any(os.path.isfile(os.path.join(sub, n)) for n in fmt.train + fmt.test):
                return fmt, sub
    return None


def load_dataset(path=None, image_size=None, strict=False, progress=False):
    """The dataset in directory ``path`` (default: Debian's Fashion-MNIST, DEFAULT_DATA_DIR):
    four IDX files, CIFAR-10 or CIFAR-100 binary files (there or in their usual sub-folder),
    else an image folder (image_folder.py: ``image_size``, ``strict`` and ``progress`` are
    its options; IDX and CIFAR images are never resized, so ``image_size`` must match them)."""
    directory = os.path.abspath(path or DEFAULT_DATA_DIR)
    if not os.path.isdir(directory):
        what = "is not a directory" if os.path.exists(directory) else "does not exist"
        raise DataError(f"data directory {directory} {what}: {INSTALL_HINT}")
    found, cifar = _find_idx(directory), _find_cifar(directory)
    name = os.path.basename(directory.rstrip(os.sep)) or directory
    if any(found.values()):
        dataset = Dataset(name, *_load_idx(directory, found))
    elif cifar:
        fmt, sub = cifar
        dataset = Dataset(fmt.title.lower(), *read_cifar(sub, fmt))
    else:
        from .image_folder import load_image_folder  # it builds on this module
        return load_image_folder(directory, name, image_size, strict, progress)
    if image_size is not None and dataset.sample_shape[1:] != (image_size, image_size):
        raise DataError(f"{directory} holds {dataset.sample_shape[1:]} images (H, W) and only "
                        f"image folders are resized: drop --image-size {image_size}")
    return dataset


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
