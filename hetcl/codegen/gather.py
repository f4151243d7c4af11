"""Host side of kernels/gather.cl.mako: a mini-batch gathered from the device-resident uint8
dataset, optionally augmented (random crop with zero padding, horizontal flip) and normalised on
the device, x = (v/255 - mean)/std as float32, y = label as int32.

The images and labels are uploaded once per device (hetcl.backend.buffers.to_device of the dataset's
uint8 arrays); each step only uploads batch int32 indices (and, augmented, the samples' keys)
and enqueues this one kernel. The augmentation's numpy twin: probes/augment.py.
"""
import dataclasses

import numpy as np

from .dropout import WORD, philox_key
from ..model.inputs import scale_shift
from .launch import Launch, round_up
from .loss import LABEL_TYPES
from .params import INT_MAX, VECTOR_WIDTHS, KernelParams, vector_width

# The augmentation's Philox stream (dropout.philox_key): any fixed 32-bit number (a dropout
# layer's stream is the crc32 of its name; only a name hashing to this one would share it).
AUGMENT_STREAM = 0x6A09E667
_LABEL_NAMES = {np.dtype(t): name for name, t in LABEL_TYPES.items()}  # dtype -> template type
_PLAIN_ARGS = [None] * 5 + [np.int64, np.int32, np.int32, np.float32, np.float32]
_AUGMENTED_ARGS = [None] * 6 + [np.int64, np.int32, np.int32, np.float32, np.float32] + \
    [np.uint32] * 3


@dataclasses.dataclass(frozen=True)
class GatherParams(KernelParams):
    """See the header of kernels/gather.cl.mako: WG work-items per group, WPT units per
    work-item, VW elements per unit (the plain kernel's vector width); all three apply to the
    plain and the augmented kernel."""
    WG: int = 64
    WPT: int = 1
    VW: int = 4

    template = "gather.cl.mako"
    LOCAL = ("WG", 1)
    CHOICES = {"VW": VECTOR_WIDTHS}
    GRIDS = ({"WG": (16, 32, 64, 128, 256), "WPT": (1, 2, 4), "VW": VECTOR_WIDTHS},)

    def global_size(self, batch, sample_size):
        units = -(-int(sample_size) // self.VW)
        return (round_up(-(-units // self.WPT), self.WG), int(batch))

    @classmethod
    def defaults(cls, features):
        if features["simt"]:
            # GPU: a uchar4 (4 bytes in, 16 out) per work-item; 64 work-items cover 256 bytes
            # of a row: a 784-byte MNIST row is 4 groups, a 3072-byte CIFAR row 12.
            return cls(WG=64, WPT=1, VW=4)
        # CPU: explicit 16-wide vectors (one uchar16 load, one float16 store), one group per
        # row of up to 16*64 = 1024 bytes: a whole MNIST row per group.
        return cls(WG=64, WPT=1, VW=16).capped(vector_width(features))


def _check_rows(array, name, size):
    """indices and keys: int32, at least `size` elements (first + count)."""
    if np.dtype(array.dtype) != np.int32 or array.size < size:
        raise ValueError(f"gather: {name} must be int32 with at least {size} elements, got "
                         f"{np.dtype(array.dtype).name} {array.shape}")


def _check(array, name, dtype, size):
    if np.dtype(array.dtype) != np.dtype(dtype) or array.size != size:
        raise ValueError(f"gather: {name} must be {np.dtype(dtype).name} with {size} elements, "
                         f"got {np.dtype(array.dtype).name} {array.shape}")


def _sample_shape(sample_shape, augment):
    """(C, H, W) as ints, or (sample_size,) for an int where nothing is augmented."""
    shape = (sample_shape,) if np.ndim(sample_shape) == 0 else tuple(sample_shape)
    if augment and len(shape) != 3:
        raise ValueError(f"gather: cropping or flipping needs sample_shape (C, H, W), "
                         f"got {sample_shape!r}")
    return tuple(int(d) for d in shape)


def _label_type(label_type):
    """(dtype, template type name) of uint8 / int32 labels; also takes the template's names."""
    dtype = np.dtype(LABEL_TYPES.get(label_type, label_type) if isinstance(label_type, str)
                     else label_type)
    if dtype not in _LABEL_NAMES:
        raise ValueError(f"gather: label_type must be uint8 or int32, got {dtype.name}")
    return dtype, _LABEL_NAMES[dtype]


class Gather:
    """x[b] = (A(images[indices[b]])/255 - mean)/std, y[b] = labels[indices[b]] for b < count,
    A the augmentation of kernels/gather.cl.mako (random crop of the image padded by `pad`
    zeros, then a random horizontal flip where `flip`) or, with pad=0 and flip=False, the
    identity, which builds the plain kernel (no random numbers).

    sample_shape: (C, H, W), or an int sample size where nothing is augmented.
    images: DeviceArray uint8 [N, C*H*W] (or [N, C, H, W]); labels: label_type (uint8 or
    int32) [N]; indices: int32 [batch]; x: float32 [batch, C*H*W] (any shape of that size,
    e.g. [batch, C, H, W]); y: int32 [batch]. An index outside [0, N) gives a NaN row and
    label -1.
    """

    def __init__(self, device, batch, sample_shape, mean, std, params=None, pad=0, flip=False,
                 label_type=np.uint8):
        self.device = device
        self.pad, self.flip = int(pad), bool(flip)
        self.augment = self.pad > 0 or self.flip
        self.sample_shape = _sample_shape(sample_shape, self.augment)
        self.batch, self.sample_size = int(batch), int(np.prod(self.sample_shape))
        self.label_dtype, label_name = _label_type(label_type)
        if self.batch < 1 or not 1 <= self.sample_size <= INT_MAX or not std > 0:
            raise ValueError(f"gather: need batch >= 1, 1 <= sample_size < 2**31 and std > 0, "
                             f"got batch={batch}, sample_size={self.sample_size}, std={std}")
        if not 0 <= self.pad <= (INT_MAX - max(self.sample_shape)) // 2:
            raise ValueError(f"gather: pad={pad} must be >= 0 and keep H + 2*pad < 2**31")
        self.scale, self.shift = scale_shift(mean, std)  # v*scale + shift == (v/255-mean)/std
        # The template context: the plain kernel's is (batch, s) alone (see its header).
        self.context = {"batch": self.batch, "s": self.sample_size}
        if self.label_dtype != np.uint8:
            self.context["label_type"] = label_name
        if self.augment:
            self.context.update(h=self.sample_shape[1], w=self.sample_shape[2], pad=self.pad,
                                flip=self.flip)
        self.params = params or GatherParams.defaults(device.features)
        self._launch = Launch(
            device, self.params, "gather", _AUGMENTED_ARGS if self.augment else _PLAIN_ARGS,
            lambda p: p.global_size(self.batch, self.sample_size), **self.context)
        self.params = self._launch.params

    def __call__(self, images, labels, indices, x, y, count=None, keys=None, seed=0, epoch=0,
                 wait_for=None, first=0):
        """Rows b < count of x and y from indices[first + b]. keys: int32, element first + b
        row b's sample key (its index in the whole data set), the counter of its draws
        (default: indices); seed: the run's seed; epoch: 0 .. 2**32-1. The draws depend on
        (seed, epoch, key) only. keys, seed and epoch do nothing where nothing is augmented."""
        count = self.batch if count is None else int(count)
        if not 0 <= count <= self.batch or not 0 <= first <= INT_MAX - count:
            raise ValueError(f"gather: count={count} outside [0, batch={self.batch}] or "
                             f"first={first} outside [0, 2**31 - count)")
        n_images = images.size // self.sample_size
        _check(images, "images", np.uint8, n_images * self.sample_size)
        _check(labels, "labels", self.label_dtype, n_images)
        _check_rows(indices, "indices", first + count)
        _check(x, "x", np.float32, self.batch * self.sample_size)
        _check(y, "y", np.int32, self.batch)
        if not self.augment:
            return self._launch(images, labels, indices, x, y, n_images, count, first,
                                self.scale, self.shift, wait_for=wait_for)
        keys = indices if keys is None else keys
        _check_rows(keys, "keys", first + count)
        if not 0 <= epoch <= WORD:
            raise ValueError(f"gather: epoch={epoch} outside [0, 2**32)")
        return self._launch(images, labels, indices, keys, x, y, n_images, count, first,
                            self.scale, self.shift, *philox_key(seed, AUGMENT_STREAM), epoch,
                            wait_for=wait_for)
