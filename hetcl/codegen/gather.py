"""Host side of kernels/gather.cl.mako: a mini-batch gathered from the device-resident uint8
dataset and normalised on the device, x = (v/255 - mean)/std as float32, y = label as int32.

The images and labels are uploaded once per device (hetcl.backend.buffers.to_device of the dataset's
uint8 arrays); each step only uploads batch int32 indices and enqueues this one kernel.
"""
import dataclasses

import numpy as np

from .launch import Launch, round_up
from .params import VECTOR_WIDTHS, KernelParams, vector_width



@dataclasses.dataclass(frozen=True)
class GatherParams(KernelParams):
    """See the header of kernels/gather.cl.mako: WG work-items per group, WPT units per
    work-item, VW bytes per unit."""
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


def _check(array, name, dtype, size):
    if np.dtype(array.dtype) != np.dtype(dtype) or array.size != size:
        raise ValueError(f"gather: {name} must be {np.dtype(dtype).name} with {size} elements, "
                         f"got {np.dtype(array.dtype).name} {array.shape}")


class Gather:
    """x[b] = (images[indices[b]]/255 - mean)/std, y[b] = labels[indices[b]] for b < count.

    images: DeviceArray uint8 [N, sample_size] (or [N, C, H, W]); labels: uint8 [N];
    indices: int32 [batch]; x: float32 [batch, sample_size] (any shape of that size, e.g.
    [batch, C, H, W]); y: int32 [batch]. An index outside [0, N) gives a NaN row and label -1.
    """

    def __init__(self, device, batch, sample_size, mean, std, params=None):
        self.device = device
        self.batch, self.sample_size = int(batch), int(sample_size)
        if self.batch < 1 or not 1 <= self.sample_size < 2 ** 31 or not std > 0:
            raise ValueError(f"gather: need batch >= 1, 1 <= sample_size < 2**31 and std > 0, "
                             f"got batch={batch}, sample_size={sample_size}, std={std}")
        # v*scale + shift == (v/255 - mean)/std; folded in float64, rounded once to float32.
        self.scale = np.float32(1.0 / (255.0 * float(std)))
        self.shift = np.float32(-float(mean) / float(std))
        self.params = params or GatherParams.defaults(device.features)
        self._launch = Launch(
            device, self.params, "gather",
            [None, None, None, None, None, np.int64, np.int32, np.float32, np.float32],
            lambda p: p.global_size(self.batch, self.sample_size),
            batch=self.batch, s=self.sample_size)
        self.params = self._launch.params

    def __call__(self, images, labels, indices, x, y, count=None, wait_for=None):
        count = self.batch if count is None else int(count)
        if not 0 <= count <= self.batch:
            raise ValueError(f"gather: count={count} outside [0, batch={self.batch}]")
        n_images = images.size // self.sample_size
        _check(images, "images", np.uint8, n_images * self.sample_size)
        _check(labels, "labels", np.uint8, n_images)
        _check(indices, "indices", np.int32, self.batch)
        _check(x, "x", np.float32, self.batch * self.sample_size)
        _check(y, "y", np.int32, self.batch)
        return self._launch(images, labels, indices, x, y, n_images, count, self.scale,
                            self.shift, wait_for=wait_for)
