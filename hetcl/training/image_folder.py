"""Image folders as datasets: DIR/<class>/<images>, or DIR/train/<class>/... with optional
val/ and test/ beside train/. Images (.png .jpg .jpeg .bmp) are decoded with Pillow into uint8
[n, C, H, W], C = 1 when every image is grayscale, else 3 (RGB, alpha dropped); labels index the
sorted class folder names (their union over the splits). Other files and files Pillow cannot
decode are skipped with a DataWarning (a DataError when strict); names starting with "." are
ignored. Decoding runs once, opening each file once: the arrays are cached (image_cache.py)
with a manifest listing every image file (relative path, size, mtime_ns); a later load only
stats the files and reuses the cache when the listing and image_size are the same.
numpy + Pillow.
"""
import concurrent.futures
import hashlib
import json
import os
import warnings

import numpy as np
from PIL import Image

from .data import INSTALL_HINT, DataError, DataWarning, Dataset, label_dtype
from .image_cache import cache_dir, read_cache, write_cache
from .metrics import Progress

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")  # matched case-insensitively
SPLITS = ("train", "val", "test")
GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
CACHE_VERSION = 1  # bump when the manifest or the arrays change meaning
WORKERS = min(16, os.cpu_count() or 1)  # Pillow releases the GIL while it decodes
CHUNK = 64  # images per decoding task: a progress update per chunk


def _bad_file(path, reason, strict):
    if strict:
        raise DataError(f"{path}: {reason}: fix or remove it (strict mode skips nothing)")
    warnings.warn(f"skipped {path}: {reason}", DataWarning, stacklevel=4)


def _listdir(path):
    """The entries of ``path`` not starting with ".", sorted by name."""
    try:
        with os.scandir(path) as it:
            return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as e:
        raise DataError(f"cannot list {path}: {e.strerror}: check its permissions") from None


def _walk(path, rel, strict):
    """(path relative to the dataset, size, mtime_ns) of each image file under ``path`` (itself
    at ``rel``), sorted; joined here because os.path.relpath per file costs more than a stat."""
    for e in _listdir(path):
        if e.is_dir():
            yield from _walk(e.path, f"{rel}/{e.name}", strict)
        elif not e.name.lower().endswith(EXTENSIONS):
            _bad_file(e.path, f"not an image file ({' '.join(EXTENSIONS)})", strict)
        else:
            try:
                st = e.stat()
            except OSError as err:
                _bad_file(e.path, f"cannot read it ({err.strerror})", strict)
                continue
            yield f"{rel}/{e.name}", st.st_size, st.st_mtime_ns


def _split_roots(directory, strict):
    """[(split, relative path)]: DIR itself ("") as train, or its train/val/test folders."""
    tops = _listdir(directory)
    dirs = {e.name for e in tops if e.is_dir()}
    if not dirs:
        raise DataError(f"no dataset files in {directory} (looked for IDX train-images-idx3-ubyte"
                        f"[.gz], CIFAR-10 data_batch_1.bin, CIFAR-100 train.bin and image class "
                        f"folders): {INSTALL_HINT}")
    if not dirs & set(SPLITS):
        return [("train", "")]
    if "train" not in dirs:
        raise DataError(f"{directory} has {'/, '.join(sorted(dirs & set(SPLITS)))}/ but no "
                        f"train/: add train/<class>/ or rename class folders train, val, test")
    for e in tops:
        if e.name not in SPLITS:
            _bad_file(e.path, "not in train/, val/ or test/", strict)
    return [(split, split + "/") for split in SPLITS if split in dirs]


def scan(directory, strict=False):
    """-> (class names, [(split, label, relative path, size, mtime_ns)] in split, class, path
    order): the listing that keys the cache; stat only, nothing is decoded."""
    found, classes = [], set()
    for split, root in _split_roots(directory, strict):
        for e in _listdir(os.path.join(directory, root)):
            if not e.is_dir():
                _bad_file(e.path, "not in a class folder", strict)
                continue
            classes.add(e.name)
            found += [(split, e.name, *f) for f in _walk(e.path, root + e.name, strict)]
    order = {name: i for i, name in enumerate(sorted(classes))}
    return sorted(classes), [(split, order[name], *file) for split, name, *file in found]


def pillow_reason(e):
    """Why Pillow could not open or decode a file, from its exception, on one line."""
    return f"Pillow cannot decode it ({' '.join(str(e).split()) or type(e).__name__})"


def image_pixels(im, channels, size):
    """uint8 [C, H, W] of the open image ``im``: L (C 1) or RGB (C 3); with ``size``, as
    torchvision's Resize(size) + CenterCrop(size): the shorter side scaled to ``size``
    (bilinear), the centre kept."""
    if im.mode.startswith("I;16"):  # 16-bit gray: keep the high byte (convert clips)
        im = Image.fromarray((np.asarray(im) >> 8).astype(np.uint8))
    target = "L" if channels == 1 else "RGB"
    if im.mode != target:  # else convert would only copy
        im = im.convert(target)
    if size:
        w, h = im.size
        new = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
        if new != (w, h):
            im = im.resize(new, Image.BILINEAR)
        left, top = int(round((new[0] - size) / 2)), int(round((new[1] - size) / 2))
        im = im.crop((left, top, left + size, top + size))
    a = np.asarray(im, np.uint8)
    return a[None] if channels == 1 else a.transpose(2, 0, 1)


def _decode_chunk(paths, size):
    """Each file opened once and decoded in its own channel count (1 for a gray mode, else 3):
    -> [uint8 [C, H, W], or (the reason it was skipped, whether Pillow read its header)]."""
    found = []
    for path in paths:
        header = False
        try:
            with Image.open(path) as im:
                header = True
                found.append(image_pixels(im, 1 if im.mode in GRAY_MODES else 3, size))
        except Exception as e:  # Pillow's format plugins raise many types on a damaged file
            found.append((pillow_reason(e), header))
    return found


class _Images:
    """uint8 [n, C, H, W] filled in file order from [c, H, W] arrays, c 1 or 3, into one array
    with room for every file (the rows of skipped files stay unused; np.empty leaves their pages
    unmapped). C is 1 until an array of 3 channels comes; then the images so far are copied
    into 3 channels, gray repeated in R, G and B as Pillow's L to RGB conversion does."""

    def __init__(self, directory, room):
        self.directory, self.room, self.count, self.out, self.first = directory, room, 0, None, ""

    def add(self, pixels, path):
        """Append ``pixels``; a DataError when its H, W differ from the first image's."""
        if self.out is not None and pixels.shape[1:] != self.out.shape[2:]:
            (h1, w1), (h2, w2) = self.out.shape[2:], pixels.shape[1:]
            raise DataError(f"the images in {self.directory} differ in size ({self.first} is "
                            f"{w1}x{h1}, {path} is {w2}x{h2}): pass --image-size N to resize "
                            f"and crop them to N x N")
        if self.out is None or pixels.shape[0] > self.out.shape[1]:
            wider = np.empty((self.room, *pixels.shape), np.uint8)
            if self.count:
                wider[:self.count] = self.out[:self.count]  # [n, 1, H, W] broadcasts to 3
            self.out, self.first = wider, self.first or path
        self.out[self.count] = pixels
        self.count += 1

    def array(self, image_size):
        if self.out is None:  # nothing decoded: an empty array of a valid shape
            return np.zeros((0, 1) + (image_size or 1,) * 2, np.uint8)
        return self.out[:self.count]


def decode(directory, paths, image_size, strict, progress):
    """-> (images uint8 [n kept, C, H, W], kept mask [len(paths)], [(path, reason)] of the
    skipped files). One pass over the files: the pool decodes a chunk per task and the results
    are taken in file order. Files Pillow cannot identify are reported at once, those with a
    readable header but damaged data after the pass; without ``image_size``, an image of
    another size than the first kept one stops the pass with a DataError."""
    bar = Progress(len(paths), f"decoding {directory}") if progress else None
    images, kept, skipped, damaged = _Images(directory, len(paths)), [False] * len(paths), [], []
    starts = range(0, len(paths), CHUNK)
    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        jobs = [pool.submit(_decode_chunk, paths[s:s + CHUNK], image_size) for s in starts]
        try:
            for n, start in enumerate(starts):
                found, jobs[n] = jobs[n].result(), None  # freed once copied into images
                for i, got in enumerate(found, start):
                    if not isinstance(got, tuple):
                        images.add(got, paths[i])
                        kept[i] = True
                    elif got[1]:
                        damaged.append((paths[i], got[0]))
                    else:
                        _bad_file(paths[i], got[0], strict)
                        skipped.append((paths[i], got[0]))
                if bar:
                    bar.update(i + 1, i + 1)
        finally:
            for job in filter(None, jobs):  # after an error: those not started yet
                job.cancel()
    if bar:
        bar.close(f" {images.count} images")
    for path, reason in damaged:
        _bad_file(path, reason, strict)
    return images.array(image_size), np.array(kept, bool), skipped + damaged


def _check_image_size(size):
    if size is None or (not isinstance(size, bool) and int(size) == size >= 1):
        return None if size is None else int(size)
    raise DataError(f"image size {size!r} is not a whole number of pixels >= 1: pass e.g. "
                    f"--image-size 32")


def _build(directory, entries, key, strict, progress):
    """Decode the listed images; -> (images, labels, manifest) of what was kept."""
    paths = [os.path.join(directory, rel) for _, _, rel, _, _ in entries]
    x, kept, skipped = decode(directory, paths, key["image_size"], strict, progress)
    kept_entries = [e for e, k in zip(entries, kept) if k]
    y = np.array([label for _, label, _, _, _ in kept_entries], label_dtype(len(key["classes"])))
    counts = {s: sum(e[0] == s for e in kept_entries) for s in SPLITS}
    token = hashlib.sha256(json.dumps(key).encode()).hexdigest()[:16]
    manifest = dict(key, token=token, shape=list(x.shape[1:]), channels=int(x.shape[1]),
                    counts=counts, skipped=[[os.path.relpath(p, directory), r]
                                            for p, r in skipped])
    return x, y, manifest


def load_image_folder(directory, name, image_size=None, strict=False, progress=False):
    """The Dataset of the image folder ``directory``, from its cache when that is current."""
    image_size = _check_image_size(image_size)
    classes, entries = scan(directory, strict)
    key = {"version": CACHE_VERSION, "image_size": image_size, "classes": classes,
           "files": [[rel, size, mtime] for _, _, rel, size, mtime in entries]}
    where = cache_dir(directory)
    cached = read_cache(where, key, SPLITS)
    x, y, manifest = cached or _build(directory, entries, key, strict, progress)
    for rel, reason in manifest["skipped"] if cached else ():  # as decoding warned the first time
        _bad_file(os.path.join(directory, rel), reason, strict)
    if manifest["counts"]["train"] == 0:
        raise DataError(f"no training images ({' '.join(EXTENSIONS)}) in the class folders of "
                        f"{directory}: put them in {directory}/<class>/ (or train/<class>/)")
    if not cached:
        write_cache(where, manifest, x, y)
    ends = np.cumsum([manifest["counts"][s] for s in SPLITS])[:2]  # [train | val | test]
    (train_x, val_x, test_x), (train_y, val_y, test_y) = np.split(x, ends), np.split(y, ends)
    dataset = Dataset(name, train_x, train_y, test_x, test_y, len(classes), classes,
                      *((val_x, val_y) if len(val_y) else ()))
    dataset.from_cache = bool(cached)
    for label in np.flatnonzero(np.bincount(dataset.train_y, minlength=len(classes)) == 0):
        warnings.warn(f"class {classes[label]!r} of {directory} has no training images: the "
                      f"model cannot learn it", DataWarning, stacklevel=3)
    return dataset
