"""Image folders as datasets: DIR/<class>/<images>, or DIR/train/<class>/... with optional
val/ and test/ beside train/. Images (.png .jpg .jpeg .bmp) are decoded with Pillow into uint8
[n, C, H, W], C = 1 when every image is grayscale, else 3 (RGB, alpha dropped); labels index the
sorted class folder names (their union over the splits). Other files and files Pillow cannot
decode are skipped with a DataWarning (a DataError when strict); names starting with "." are
ignored. Decoding runs once: the arrays are cached as .npy files beside a JSON manifest listing
every image file (relative path, size, mtime_ns), in DIR/.hetcl-cache/ or, where DIR is
read-only, in $XDG_CACHE_HOME/hetcl/datasets/<sha256 of DIR's path>/; a later load only stats
the files and reuses the cache when the listing and image_size are the same. numpy + Pillow.
"""
import concurrent.futures
import hashlib
import json
import os
import time
import warnings

import numpy as np
from PIL import Image

from .data import INSTALL_HINT, DataError, DataWarning, Dataset, label_dtype
from .metrics import Progress

EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")  # matched case-insensitively
SPLITS = ("train", "val", "test")
GRAY_MODES = {"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}
CACHE_DIR = ".hetcl-cache"
MANIFEST = "manifest.json"
CACHE_VERSION = 1  # bump when the manifest or the arrays change meaning
WORKERS = min(16, os.cpu_count() or 1)  # Pillow releases the GIL while it decodes
CHUNK = 64  # images per decoding task: a progress update per chunk
STALE_TMP_S = 3600  # a temp file this old was left by a crashed writer


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


def _header(path):
    """((width, height), mode) from the file's header, or (None, reason)."""
    try:
        with Image.open(path) as im:
            return im.size, im.mode
    except Exception as e:  # Pillow's format plugins raise many types on a damaged file
        return None, _reason(e)


def _reason(e):
    return f"Pillow cannot decode it ({' '.join(str(e).split()) or type(e).__name__})"


def image_to_array(path, channels, size):
    """uint8 [C, H, W] of one image: L or RGB; with ``size``, as torchvision's Resize(size) +
    CenterCrop(size): the shorter side scaled to ``size`` (bilinear), the centre kept."""
    with Image.open(path) as im:
        if im.mode.startswith("I;16"):  # 16-bit gray: keep the high byte (convert clips)
            im = Image.fromarray((np.asarray(im) >> 8).astype(np.uint8))
        im = im.convert("L" if channels == 1 else "RGB")
    if size:
        w, h = im.size
        new = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
        if new != (w, h):
            im = im.resize(new, Image.BILINEAR)
        left, top = int(round((new[0] - size) / 2)), int(round((new[1] - size) / 2))
        im = im.crop((left, top, left + size, top + size))
    a = np.asarray(im, np.uint8)
    return a[None] if channels == 1 else a.transpose(2, 0, 1)


def _decode_chunk(paths, indices, out, channels, size):
    """Decode ``paths[indices]`` into ``out``; -> (count, [(index, reason)] of failures)."""
    failed = []
    for i in indices:
        try:
            out[i] = image_to_array(paths[i], channels, size)
        except Exception as e:  # as in _header: any failure to decode skips the file
            failed.append((i, _reason(e)))
    return len(indices), failed


def _target_shape(directory, paths, headers, image_size):
    """(channels, (H, W)) of the output from the headers of the readable files."""
    ok = [(p, s, m) for p, (s, m) in zip(paths, headers) if s is not None] or [("", (1, 1), "L")]
    channels = 1 if all(m in GRAY_MODES for _, _, m in ok) else 3
    if image_size:
        return channels, (image_size, image_size)
    other = next((x for x in ok if x[1] != ok[0][1]), None)
    if other:
        (p1, (w1, h1), _), (p2, (w2, h2), _) = ok[0], other
        raise DataError(f"the images in {directory} differ in size ({p1} is {w1}x{h1}, {p2} is "
                        f"{w2}x{h2}): pass --image-size N to resize and crop them to N x N")
    w, h = ok[0][1]
    return channels, (h, w)


def decode(directory, paths, image_size, strict, progress):
    """-> (images uint8 [n, C, H, W], kept mask [n], [(path, reason)] of the skipped files)."""
    with concurrent.futures.ThreadPoolExecutor(WORKERS) as pool:
        headers = list(pool.map(_header, paths, chunksize=CHUNK))
        skipped = [(p, h[1]) for p, h in zip(paths, headers) if h[0] is None]
        for p, reason in skipped:
            _bad_file(p, reason, strict)
        channels, (h, w) = _target_shape(directory, paths, headers, image_size)
        out = np.zeros((len(paths), channels, h, w), np.uint8)
        todo = [i for i, hd in enumerate(headers) if hd[0] is not None]
        bar = Progress(len(todo), f"decoding {directory}") if progress else None
        jobs = [pool.submit(_decode_chunk, paths, todo[i:i + CHUNK], out, channels, image_size)
                for i in range(0, len(todo), CHUNK)]
        done, failed = 0, []
        for job in concurrent.futures.as_completed(jobs):
            count, bad = job.result()
            done += count
            failed += bad
            if bar:
                bar.update(done, done)
    if bar:
        bar.close(f" {done - len(failed)} images")
    for i, reason in sorted(failed):
        _bad_file(paths[i], reason, strict)
    kept = np.array([hd[0] is not None for hd in headers], bool)
    kept[[i for i, _ in failed]] = False
    images = out if kept.all() else out[kept]  # a copy only where files were skipped
    return images, kept, skipped + [(paths[i], r) for i, r in sorted(failed)]


def cache_dir(directory):
    """DIR/.hetcl-cache where DIR is writable, else a folder under $XDG_CACHE_HOME."""
    local = os.path.join(directory, CACHE_DIR)
    if os.access(directory, os.W_OK) and (not os.path.exists(local)
                                          or os.access(local, os.W_OK)):
        return local
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    key = hashlib.sha256(os.path.abspath(directory).encode()).hexdigest()
    return os.path.join(base, "hetcl", "datasets", key)


def read_cache(where, key):
    """(images, labels, manifest) when ``where`` holds the cache of ``key``, else None."""
    if not os.path.exists(os.path.join(where, MANIFEST)):
        return None
    try:
        with open(os.path.join(where, MANIFEST), "rb") as f:
            manifest = json.loads(f.read())
        if {k: manifest.get(k) for k in key} != key:
            return None  # another listing, image size or format: stale, not damaged
        n, token = sum(int(manifest["counts"][s]) for s in SPLITS), manifest["token"]
        x = np.load(os.path.join(where, f"{token}-x.npy"), allow_pickle=False)
        y = np.load(os.path.join(where, f"{token}-y.npy"), allow_pickle=False)
        if x.dtype != np.uint8 or x.shape != (n, *manifest["shape"]) or y.shape != (n,):
            raise ValueError(f"arrays {x.dtype} {x.shape} and {y.shape} do not fit the manifest")
        manifest["skipped"] = [(str(rel), str(reason)) for rel, reason in manifest["skipped"]]
        return x, y, manifest
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        warnings.warn(f"the dataset cache in {where} is damaged ({' '.join(str(e).split())}): "
                      f"rebuilding it", DataWarning, stacklevel=3)


def _atomic_write(path, write):
    """Write ``path`` through a temp file renamed over it: readers see the old or the new."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def write_cache(where, manifest, x, y):
    """The arrays first, then the manifest that names them (renamed last, so a crash leaves
    the previous cache or none); then the files of other caches go. Named by the token, a hash
    of the key, so processes building the same cache at once write the same files."""
    token = manifest["token"]
    try:
        os.makedirs(where, exist_ok=True)
        for part, a in (("x", x), ("y", y)):
            _atomic_write(os.path.join(where, f"{token}-{part}.npy"), lambda f, a=a: np.save(f, a))
        _atomic_write(os.path.join(where, MANIFEST), lambda f: f.write(json.dumps(manifest)
                                                                        .encode()))
        for name in os.listdir(where):
            path = os.path.join(where, name)
            if (name.endswith(".npy") and not name.startswith(token)) or (
                    name.endswith(".tmp") and time.time() - os.path.getmtime(path) > STALE_TMP_S):
                os.remove(path)
    except OSError as e:
        warnings.warn(f"cannot write the dataset cache in {where} ({e.strerror or e}): the "
                      f"images will be decoded again next time", DataWarning, stacklevel=3)


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
    cached = read_cache(where, key)
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
