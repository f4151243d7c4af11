"""The gather kernel's augmentation in numpy (kernels/gather.cl.mako: torchvision's
RandomCrop((H, W), padding=pad) then RandomHorizontalFlip(0.5) on the uint8 images, drawn from
Philox4x32-10 per sample, the template header documents the counter and the draws), and the
gather family's probe, plain or augmented."""
import numpy as np

from ..dropout import WORD, philox_key
from ..gather import AUGMENT_STREAM, Gather
from . import relative_error
from .dropout import philox4x32


def augment_draws(keys, seed, epoch, pad):
    """(dy, dx, flip) of the samples of the given keys (their indices in the whole data set) in
    this run (seed) and epoch: the crop's offsets into the padded image, int arrays in
    [0, 2*pad], and whether to flip, a bool array (what flip=True uses)."""
    keys = np.asarray(keys).astype(np.int64) & WORD   # the kernel's (uint)keys[b]
    words = philox4x32((keys, epoch, 0, 0), philox_key(seed, AUGMENT_STREAM))
    offsets = np.uint32(2 * pad + 1)
    return ((words[0] % offsets).astype(np.intp), (words[1] % offsets).astype(np.intp),
            (words[2] & np.uint32(1)).astype(bool))


def augment_reference(images, indices, keys, seed, epoch, pad, flip):
    """uint8 [batch, C, H, W]: images[indices] (images uint8 [N, C, H, W]) padded by `pad` zeros
    on each side, cropped back to H x W at the keys' offsets and, where flip and the key's
    draw say so, mirrored left to right."""
    images = np.asarray(images, np.uint8)
    h, w = images.shape[2:]
    dy, dx, mirror = augment_draws(keys, seed, epoch, pad)
    mirror &= bool(flip)
    padded = np.pad(images[np.asarray(indices)], ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    rows = dy[:, None] + np.arange(h)                                               # [batch, H]
    cols = dx[:, None] + np.where(mirror[:, None], np.arange(w)[::-1], np.arange(w))  # [batch, W]
    return padded[np.arange(len(rows))[:, None, None, None],
                  np.arange(images.shape[1])[None, :, None, None],
                  rows[:, None, :, None], cols[:, None, None, :]]


def gather(device, params, batch, s, h=None, w=None, **options):
    """The prover's check of one gather variant in the template context it was built with
    (batch, s and what Gather adds: label_type, h, w, pad, flip): the largest error of a
    gathered batch against numpy, relative to its largest magnitude, inf where a label
    differs. The keys are not the indices; outputs start poisoned."""
    from ...backend.buffers import empty, to_device
    rng = np.random.default_rng(0)
    shape = (s // (h * w), h, w) if h else (1, 1, s)
    mean, std, seed, epoch = 0.25, 0.5, 2 ** 40 + 3, 5
    op = Gather(device, batch, shape if h else s, mean, std, params=params, **options)
    images = rng.integers(0, 256, (5,) + shape, dtype=np.uint8)
    labels = rng.integers(0, min(1000, np.iinfo(op.label_dtype).max), 5).astype(op.label_dtype)
    indices = rng.integers(0, 5, batch, dtype=np.int32)
    keys = rng.integers(0, 2 ** 31 - 1, batch, dtype=np.int32)
    x = empty(device, (batch, s)).fill(np.nan)
    y = empty(device, (batch,), np.int32).fill(-7)
    op(to_device(device, images), to_device(device, labels), to_device(device, indices), x, y,
       keys=to_device(device, keys), seed=seed, epoch=epoch)
    if not np.array_equal(y.get(), labels[indices]):
        return float("inf")
    pixels = augment_reference(images, indices, keys, seed, epoch, op.pad, op.flip)
    ref = (pixels.reshape(batch, s) / 255.0 - mean) / std
    return relative_error(x.get(), ref)
