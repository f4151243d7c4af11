"""What `hetcl predict` classifies: image files (PNG, JPEG, BMP), or IDX image files and CIFAR
binary files holding many images, read into uint8 pixels [N, C, H, W] as the model's training
data had them. An image of another size or mode than the model takes is a one-line DataError
(images resized in training, by --image-size, are resized the same way here)."""
import os

import numpy as np
from PIL import Image

from .data import CIFAR10, CIFAR100, CIFAR_SHAPE, DataError, read_bytes, read_idx
from .image_folder import EXTENSIONS, GRAY_MODES, image_pixels, pillow_reason

IDX_MAGIC = b"\x00\x00\x08"  # uint8 IDX data (the third byte is the type code)


def read_inputs(paths, image_shape, image_size=None):
    """-> (pixels uint8 [N, C, H, W], names [N]: the file, or "file[i]" for the i-th image of
    an IDX or CIFAR file). image_shape: the model's (C, H, W)."""
    pixels, names = [], []
    for path in paths:
        images = _read_file(path, tuple(image_shape), image_size)
        pixels.append(images)
        names += [path] if len(images) == 1 and _is_image(path) else \
            [f"{path}[{i}]" for i in range(len(images))]
    if not pixels:
        raise DataError("no files to classify: pass image files, IDX or CIFAR files")
    return np.concatenate(pixels), names


def _is_image(path):
    return path.lower().endswith(EXTENSIONS)


def _read_file(path, shape, image_size):
    if not os.path.isfile(path):
        raise DataError(f"{path} does not exist or is not a file")
    if _is_image(path):
        return _read_image(path, shape, image_size)[None]
    blob = read_bytes(path)
    if blob[:3] == IDX_MAGIC:
        images = read_idx(path)
        images = images[:, None] if images.ndim == 3 else images
    else:
        images = _cifar_records(path, blob)
    if images.shape[1:] != shape:
        raise DataError(f"{path} holds images of shape {images.shape[1:]} (C, H, W), the model "
                        f"takes {shape}")
    return images


def _cifar_records(path, blob):
    """Images of a CIFAR-10 or CIFAR-100 binary file (told apart by their record sizes)."""
    for fmt in (CIFAR10, CIFAR100):
        record = fmt.labels + int(np.prod(CIFAR_SHAPE))
        if blob and len(blob) % record == 0:
            return np.frombuffer(blob, np.uint8).reshape(-1, record)[:, fmt.labels:].reshape(
                (-1,) + CIFAR_SHAPE)
    raise DataError(f"{path} is not an image (.png .jpg .jpeg .bmp), an IDX image file or a "
                    f"CIFAR binary file")


def _read_image(path, shape, image_size):
    """uint8 [C, H, W] of an image file, opened once: its header is checked against the
    model's (C, H, W) ``shape``, then it is decoded."""
    try:
        with Image.open(path) as im:
            _check_header(path, im.size, im.mode, shape, image_size)
            return image_pixels(im, shape[0], image_size)
    except DataError:
        raise
    except Exception as e:  # Pillow's format plugins raise many types on a damaged file
        raise DataError(f"{path}: {pillow_reason(e)}") from None


def _check_header(path, size, mode, shape, image_size):
    """Refuse an image the model cannot take: size (width, height) and mode from its header."""
    channels, (h, w) = shape[0], shape[1:]
    if channels == 1 and mode not in GRAY_MODES:
        raise DataError(f"{path} is a {mode} image, the model takes grayscale (1 channel) "
                        f"images: convert it to grayscale first")
    if image_size is None and (size[1], size[0]) != (h, w):
        raise DataError(f"{path} is {size[0]}x{size[1]}, the model takes {w}x{h} images: "
                        f"resize it (the run was trained without --image-size)")
