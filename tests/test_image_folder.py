"""hetcl.training.image_folder: real image folders written here with Pillow from Fashion-MNIST
test images (PNG and JPEG), decoded back through load_dataset: pixels, labels, class names,
splits, skipped files, resizing, channels, the cache and its invalidation, and
Dataset.with_validation."""
import json
import os
import warnings

import numpy as np
import pytest
from PIL import Image

from hetcl.training import data, image_cache, image_folder
from hetcl.training.data import DataError, DataWarning, load_dataset

pytestmark = pytest.mark.skipif(not os.path.isdir(data.DEFAULT_DATA_DIR),
                                reason="dataset-fashion-mnist is not installed")

# Fashion-MNIST labels 0, 1, 7 as class folders; sorted folder names give the labels
# shirt 0, sneaker 1, trouser 2. Uneven counts on purpose.
CLASSES = {"shirt": (0, 40), "trouser": (1, 25), "sneaker": (7, 15)}
NAMES = sorted(CLASSES)
JPEG_EVERY = 4  # every 4th image of a class is written as JPEG, the others as PNG


@pytest.fixture(scope="module")
def fashion():
    return load_dataset(data.DEFAULT_DATA_DIR)


def source_images(fashion, label, count, skip=0):
    """The first ``count`` Fashion-MNIST test images of ``label`` after ``skip``, [n, 28, 28]."""
    return fashion.test_x[np.flatnonzero(fashion.test_y == label)[skip:skip + count], 0]


def write_class(folder, images, jpeg_every=JPEG_EVERY):
    """images [n, H, W] or [n, H, W, 3] as folder/img000.png ...; -> [(path, pixels, is_png)]."""
    os.makedirs(folder, exist_ok=True)
    written = []
    for i, pixels in enumerate(images):
        is_png = i % jpeg_every != jpeg_every - 1
        path = os.path.join(folder, f"img{i:03d}." + ("png" if is_png else "JPG"))
        Image.fromarray(pixels).save(path, **({} if is_png else {"quality": 90}))
        written.append((path, pixels, is_png))
    return written


def make_folder(root, fashion, classes=CLASSES, skip=0):
    """root/<class>/img*.png|JPG; -> the written files in load order, with their labels."""
    expected = []
    for label, name in enumerate(sorted(classes)):
        source, count = classes[name]
        images = source_images(fashion, source, count, skip)
        expected += [(p, x, png, label) for p, x, png in write_class(root / name, images)]
    return expected


def check_images(x, y, expected):
    assert x.shape == (len(expected), 1, 28, 28) and x.dtype == np.uint8
    assert y.tolist() == [label for *_, label in expected] and y.dtype == np.uint8
    for got, (path, pixels, is_png, _) in zip(x[:, 0], expected):
        if is_png:
            assert np.array_equal(got, pixels), path
        else:  # JPEG at quality 90: close, not equal
            assert np.abs(got.astype(int) - pixels).mean() < 4, path
    jpeg = [np.abs(g.astype(int) - p).mean() for g, (_, p, png, _) in zip(x[:, 0], expected)
            if not png]
    assert not jpeg or 0 < np.mean(jpeg) < 2.5
    return len(jpeg)


def load_quietly(path, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning expected
        return load_dataset(str(path), **kw)


def test_class_folders_with_bad_files_and_cache(tmp_path, fashion):
    expected = make_folder(tmp_path, fashion)
    with open(tmp_path / "trouser" / "x.png", "wb") as f:  # a truncated PNG
        f.write(open(expected[0][0], "rb").read()[:100])
    (tmp_path / "sneaker" / "notes.txt").write_text("where these came from")
    (tmp_path / "shirt" / ".DS_Store").write_bytes(b"\0")  # hidden: ignored silently
    for attempt in range(2):
        with pytest.warns(DataWarning) as caught:
            ds = load_dataset(str(tmp_path))
        messages = sorted(str(w.message) for w in caught)
        assert len(messages) == 2, messages
        assert "notes.txt" in messages[0] and "not an image file" in messages[0]
        assert "x.png" in messages[1] and "truncated" in messages[1]
        assert ds.from_cache == (attempt == 1)
        assert ds.name == tmp_path.name and ds.classes == 3 and ds.class_names == NAMES
        assert check_images(ds.train_x, ds.train_y, expected) == 10 + 6 + 3  # JPEGs
        assert np.bincount(ds.train_y).tolist() == [40, 15, 25]
        assert ds.test_x.shape == (0, 1, 28, 28) and len(ds.test_y) == 0 and ds.val_x is None
        x = ds.train_x / 255.0
        assert np.isclose(ds.mean, x.mean()) and np.isclose(ds.std, x.std())
        if attempt == 0:
            first = ds
    assert np.array_equal(first.train_x, ds.train_x) and np.array_equal(first.train_y, ds.train_y)
    manifest = json.loads((tmp_path / ".hetcl-cache" / "manifest.json").read_text())
    assert len(manifest["files"]) == 81 and manifest["counts"] == {"train": 80, "val": 0,
                                                                   "test": 0}
    assert manifest["classes"] == NAMES and manifest["shape"] == [1, 28, 28]


def test_unidentified_files_are_reported_before_damaged_ones(tmp_path, fashion):
    expected = make_folder(tmp_path, fashion, {"a": (0, 3), "b": (1, 3)})
    (tmp_path / "a" / "0cut.png").write_bytes(open(expected[0][0], "rb").read()[:100])
    (tmp_path / "b" / "junk.png").write_bytes(os.urandom(300))
    with pytest.warns(DataWarning) as caught:
        assert len(load_dataset(str(tmp_path)).train_y) == 6
    assert [str(w.message).split(":")[0] for w in caught] == [
        f"skipped {tmp_path / 'b' / 'junk.png'}", f"skipped {tmp_path / 'a' / '0cut.png'}"]


def test_strict_refuses_bad_files(tmp_path, fashion):
    make_folder(tmp_path, fashion, {"a": (0, 3), "b": (1, 3)})
    (tmp_path / "b" / "notes.txt").write_text("hello")
    with pytest.raises(DataError, match=r"notes\.txt.*not an image file.*strict"):
        load_dataset(str(tmp_path), strict=True)
    os.remove(tmp_path / "b" / "notes.txt")
    (tmp_path / "a" / "x.png").write_bytes(os.urandom(300))
    with pytest.raises(DataError, match=r"x\.png.*cannot identify"):
        load_dataset(str(tmp_path), strict=True)
    with pytest.warns(DataWarning, match=r"x\.png"):
        assert not load_dataset(str(tmp_path)).from_cache
    with pytest.raises(DataError, match=r"x\.png"):  # from the cache: refused all the same
        load_dataset(str(tmp_path), strict=True)


def test_cache_invalidation(tmp_path, fashion):
    expected = make_folder(tmp_path, fashion, {"a": (0, 8), "b": (1, 8)})
    assert not load_quietly(tmp_path).from_cache
    assert load_quietly(tmp_path).from_cache
    path, pixels = expected[2][0], expected[2][1]
    Image.fromarray(255 - pixels).save(path)  # new content and size
    ds = load_quietly(tmp_path)
    assert not ds.from_cache and np.array_equal(ds.train_x[2, 0], 255 - pixels)
    assert load_quietly(tmp_path).from_cache
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1000))  # only the mtime changes
    assert not load_quietly(tmp_path).from_cache
    os.remove(expected[0][0])
    ds = load_quietly(tmp_path)
    assert not ds.from_cache and len(ds.train_y) == 15
    Image.fromarray(pixels).save(tmp_path / "b" / "new.png")
    ds = load_quietly(tmp_path)
    assert not ds.from_cache and len(ds.train_y) == 16
    assert np.array_equal(ds.train_x[-1, 0], pixels)  # b/new.png sorts last
    assert not load_quietly(tmp_path, image_size=16).from_cache
    assert load_quietly(tmp_path, image_size=16).from_cache
    assert not load_quietly(tmp_path).from_cache  # one cache: the other size rebuilt it
    cache = tmp_path / ".hetcl-cache"
    assert len([n for n in os.listdir(cache) if n.endswith(".npy")]) == 2  # old ones removed


def test_damaged_cache_is_rebuilt(tmp_path, fashion):
    make_folder(tmp_path, fashion, {"a": (0, 5), "b": (1, 5)})
    first = load_quietly(tmp_path)
    cache = tmp_path / ".hetcl-cache"
    npy = next(n for n in os.listdir(cache) if n.endswith("-x.npy"))
    with open(cache / npy, "r+b") as f:
        f.truncate(200)
    for damage in (None, b"{not json"):
        if damage:
            (cache / "manifest.json").write_bytes(damage)
        with pytest.warns(DataWarning, match="dataset cache .* is damaged.*rebuilding"):
            ds = load_dataset(str(tmp_path))
        assert not ds.from_cache and np.array_equal(ds.train_x, first.train_x)
        assert load_quietly(tmp_path).from_cache


def test_cache_outside_a_read_only_folder(tmp_path, fashion, monkeypatch):
    folder = tmp_path / "photos"
    make_folder(folder, fashion, {"a": (0, 3), "b": (1, 3)})
    access = os.access
    monkeypatch.setattr(os, "access", lambda p, mode: access(p, mode) and
                        not str(p).startswith(str(folder)))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert not load_quietly(folder).from_cache and load_quietly(folder).from_cache
    assert not (folder / ".hetcl-cache").exists()
    where = image_cache.cache_dir(str(folder))
    assert where.startswith(str(tmp_path / "xdg" / "hetcl" / "datasets"))
    assert os.path.isfile(os.path.join(where, "manifest.json"))


def test_unwritable_cache_still_loads(tmp_path, fashion, monkeypatch):
    make_folder(tmp_path / "photos", fashion, {"a": (0, 3), "b": (1, 3)})
    (tmp_path / "file").write_text("")  # a cache folder under a file cannot be made
    monkeypatch.setattr(image_folder, "cache_dir", lambda d: str(tmp_path / "file" / "cache"))
    with pytest.warns(DataWarning, match="cannot write the dataset cache"):
        ds = load_dataset(str(tmp_path / "photos"))
    assert len(ds.train_y) == 6 and not ds.from_cache


def test_split_folders(tmp_path, fashion):
    train = make_folder(tmp_path / "train", fashion, {"a": (0, 6), "b": (1, 5)})
    test = make_folder(tmp_path / "test", fashion, {"a": (0, 3), "c": (7, 2)}, skip=10)
    val = make_folder(tmp_path / "val", fashion, {"b": (1, 4)}, skip=20)
    with pytest.warns(DataWarning, match="class 'c' .* has no training images"):
        ds = load_dataset(str(tmp_path))
    assert ds.class_names == ["a", "b", "c"] and ds.classes == 3
    check_images(ds.train_x, ds.train_y, train)
    check_images(ds.test_x, ds.test_y, [e[:3] + ({0: 0, 1: 2}[e[3]],) for e in test])
    check_images(ds.val_x, ds.val_y, [e[:3] + (1,) for e in val])
    (tmp_path / "README.md").write_text("about")
    with pytest.warns(DataWarning) as caught:
        assert load_dataset(str(tmp_path)).from_cache
    assert any("README.md: not in train/, val/ or test/" in str(w.message) for w in caught)


def test_split_folders_need_train(tmp_path, fashion):
    make_folder(tmp_path / "test", fashion, {"a": (0, 2)})
    with pytest.raises(DataError, match=r"has test/ but no train/"):
        load_dataset(str(tmp_path))


def test_no_images(tmp_path):
    os.makedirs(tmp_path / "a")
    (tmp_path / "a" / "notes.txt").write_text("x")
    with pytest.warns(DataWarning), pytest.raises(DataError, match="no training images"):
        load_dataset(str(tmp_path))


def expected_resize(pixels, size):
    """torchvision's Resize(size) + CenterCrop(size), written out for a test image."""
    im = Image.fromarray(pixels)
    w, h = im.size
    new = (size, int(size * h / w)) if w <= h else (int(size * w / h), size)
    im = im.resize(new, Image.BILINEAR)
    left, top = int(round((new[0] - size) / 2)), int(round((new[1] - size) / 2))
    return np.asarray(im.crop((left, top, left + size, top + size)))


def test_image_size_resizes_and_crops(tmp_path, fashion):
    source = source_images(fashion, 0, 4)
    write_class(tmp_path / "a", source, jpeg_every=99)
    tall = np.ascontiguousarray(source[0][:, 4:24])  # 28 rows x 20 columns
    Image.fromarray(tall).save(tmp_path / "b.png")
    os.makedirs(tmp_path / "b")
    os.replace(tmp_path / "b.png", tmp_path / "b" / "tall.png")
    with pytest.raises(DataError, match=r"differ in size .*img000\.png is 28x28.*tall\.png is "
                                        r"20x28.*--image-size N"):
        load_dataset(str(tmp_path))
    ds = load_quietly(tmp_path, image_size=16)
    assert ds.train_x.shape == (5, 1, 16, 16) and ds.sample_shape == (1, 16, 16)
    for got, pixels in zip(ds.train_x[:4, 0], source):
        assert np.array_equal(got, np.asarray(Image.fromarray(pixels).resize((16, 16),
                                                                             Image.BILINEAR)))
    assert np.array_equal(ds.train_x[4, 0], expected_resize(tall, 16))  # 16x22, rows 3..19
    assert np.array_equal(load_quietly(tmp_path, image_size=40).train_x[4, 0],
                          expected_resize(tall, 40))  # enlarged: 40x56
    for bad in (0, -3, 2.5, True):
        with pytest.raises(DataError, match="image size"):
            load_dataset(str(tmp_path), image_size=bad)


def test_color_images_give_three_channels(tmp_path, fashion):
    gray = source_images(fashion, 0, 3)
    rgb = np.stack([gray[0], 255 - gray[0], gray[1]], axis=-1)
    write_class(tmp_path / "gray", gray, jpeg_every=99)
    os.makedirs(tmp_path / "color")
    Image.fromarray(rgb).save(tmp_path / "color" / "rgb.png")
    rgba = np.concatenate([rgb, np.full((28, 28, 1), 7, np.uint8)], axis=-1)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "color" / "rgba.PNG")
    ds = load_quietly(tmp_path)
    assert ds.train_x.shape == (5, 3, 28, 28) and ds.class_names == ["color", "gray"]
    assert np.array_equal(ds.train_x[0], rgb.transpose(2, 0, 1))
    assert np.array_equal(ds.train_x[1], rgb.transpose(2, 0, 1))  # alpha dropped
    for got, pixels in zip(ds.train_x[2:], gray):  # grayscale repeated in R, G and B
        assert all(np.array_equal(got[c], pixels) for c in range(3))


def gray_image(mode, pixels):
    """An image of the gray ``mode`` from uint8 ``pixels`` [H, W]."""
    if mode == "1":
        return Image.fromarray(pixels > 127)
    if mode == "LA":
        return Image.merge("LA", [Image.fromarray(pixels), Image.fromarray(255 - pixels)])
    if mode in ("I", "F"):
        return Image.fromarray((pixels * 3 - 100).astype({"I": np.int32, "F": np.float32}[mode]))
    if mode.startswith("I;16"):
        order = {"I;16B": ">", "I;16N": "="}.get(mode, "<")
        wide = (pixels.astype(np.uint16) * 257 + 3).astype(order + "u2")
        return Image.frombytes(mode, pixels.shape[::-1], wide.tobytes())
    return Image.fromarray(pixels)


@pytest.mark.parametrize("mode", sorted(image_folder.GRAY_MODES - {"La"}))  # Pillow: no La->L
def test_gray_decoded_once_repeats_into_rgb_as_pillow_converts(fashion, mode):
    """A gray image is decoded to 1 channel; in an RGB data set that channel is repeated,
    which must equal Pillow's conversion to RGB, resized or not."""
    im = gray_image(mode, np.ascontiguousarray(source_images(fashion, 0, 1)[0][:, 4:24]))
    assert im.mode == mode
    for size in (None, 7, 16, 40):
        gray = image_folder.image_pixels(im, 1, size)
        assert np.array_equal(np.repeat(gray, 3, axis=0), image_folder.image_pixels(im, 3, size))


def test_each_file_is_opened_once(tmp_path, fashion, monkeypatch):
    write_class(tmp_path / "gray", source_images(fashion, 0, 5), jpeg_every=99)
    Image.fromarray(np.zeros((28, 28, 3), np.uint8)).save(tmp_path / "gray" / "rgb.png")
    opened, open_image = [], Image.open
    monkeypatch.setattr(Image, "open", lambda path: opened.append(path) or open_image(path))
    ds = load_quietly(tmp_path, image_size=16)
    assert ds.train_x.shape == (6, 3, 16, 16) and len(opened) == len(set(opened)) == 6
    for got, pixels in zip(ds.train_x, source_images(fashion, 0, 5)):  # gray in R, G, B
        assert all(np.array_equal(c, expected_resize(pixels, 16)) for c in got)


def test_16_bit_grayscale_keeps_the_high_byte(tmp_path, fashion):
    pixels = source_images(fashion, 0, 1)[0]
    os.makedirs(tmp_path / "a")
    Image.fromarray(pixels.astype(np.uint16) * 256 + 100).save(tmp_path / "a" / "deep.png")
    Image.fromarray(pixels).save(tmp_path / "a" / "flat.bmp")
    ds = load_quietly(tmp_path)
    assert ds.train_x.shape == (2, 1, 28, 28)
    assert np.array_equal(ds.train_x[0, 0], pixels) and np.array_equal(ds.train_x[1, 0], pixels)


def test_progress_on_first_load_only(tmp_path, fashion, capsys):
    make_folder(tmp_path, fashion, {"a": (0, 3), "b": (1, 3)})
    load_quietly(tmp_path, progress=True)
    assert f"decoding {tmp_path}" in capsys.readouterr().err
    load_quietly(tmp_path, progress=True)
    assert "decoding" not in capsys.readouterr().err


def test_with_validation(tmp_path, fashion):
    make_folder(tmp_path, fashion)
    ds = load_quietly(tmp_path)
    n = len(ds.train_y)
    split = ds.with_validation(0.25, seed=3)
    assert len(split.val_y) == 20 and len(split.train_y) == 60
    assert split.class_names == NAMES and split.from_cache == ds.from_cache
    # disjoint and covering: every training image lands in exactly one part, label with it
    pairs = sorted(map(bytes, np.concatenate([split.train_x, split.val_x]).reshape(n, -1)))
    assert pairs == sorted(map(bytes, ds.train_x.reshape(n, -1)))
    assert np.array_equal(np.bincount(np.concatenate([split.train_y, split.val_y])),
                          np.bincount(ds.train_y))
    x = split.train_x / 255.0
    assert np.isclose(split.mean, x.mean()) and np.isclose(split.std, x.std())
    same, other = ds.with_validation(0.25, seed=3), ds.with_validation(0.25, seed=4)
    assert np.array_equal(same.val_x, split.val_x) and np.array_equal(same.val_y, split.val_y)
    assert not np.array_equal(other.val_x, split.val_x)
    with pytest.raises(DataError, match="already has a validation part"):
        split.with_validation(0.1, 0)
    for fraction in (0, 1, 1.5, -0.1):
        with pytest.raises(DataError, match="not between 0 and 1"):
            ds.with_validation(fraction, 0)
    with pytest.raises(DataError, match="at least 1"):
        ds.with_validation(0.001, 0)
