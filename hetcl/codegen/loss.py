"""Host side of kernels/loss.cl.mako: fused softmax + cross-entropy (or sigmoid + binary
cross-entropy) + gradient + per-row accuracy, in one launch.

The loss and the gradient are divided by ``global_n``, the size of the whole mini-batch, so the
shards of a batch split over devices sum to the batch's loss and gradient exactly. The kernel
writes one loss and one correct-flag per row; the caller reduces them (a [n] read-back is tiny
and keeps the reduction order fixed).
"""
import dataclasses

import numpy as np

from .launch import Launch
from .params import FLOAT_BYTES, INT_MAX, KernelParams

LABEL_TYPES = {"int": np.int32, "uchar": np.uint8}
INT_BYTES = 4


@dataclasses.dataclass(frozen=True)
class LossParams(KernelParams):
    """TPR work-items per row (1, or a power of two that reduces through local memory), RPG rows
    per work-group. See the header of kernels/loss.cl.mako."""
    TPR: int = 1
    RPG: int = 16

    template = "loss.cl.mako"
    LOCAL = ("TPR", "RPG")
    POWERS_OF_TWO = ("TPR",)
    GRIDS = ({"TPR": (1, 2, 4, 8, 16, 32, 64), "RPG": (1, 2, 4, 8, 16, 32, 64)},)

    def local_mem_bytes(self):
        # One float and one int per work-item for the max/argmax tree (the sum reuses the float).
        return 0 if self.TPR == 1 else (FLOAT_BYTES + INT_BYTES) * self.TPR * self.RPG

    def global_size(self, n):
        return (self.TPR, -(-int(n) // self.RPG) * self.RPG)

    @classmethod
    def defaults(cls, features):
        if features["simt"]:
            # GPU: 32 work-items share a row (coalesced reads, 1000 classes in 32 steps); a row
            # per work-item (TPR=1) is far slower on wide rows (docs/benchmarks.md, 'Layers').
            return cls(TPR=32, RPG=8)
        # CPU: a row per work-item; rows are short (10-1000 classes) and caches do the rest.
        return cls(TPR=1, RPG=16)


class _Loss:
    kernel_name = None  # also the template's `loss` context value

    def __init__(self, device, n, classes, label_type="int", params=None):
        self.n, self.classes = int(n), int(classes)
        if self.n < 1 or self.classes < 1:
            raise ValueError(f"n={self.n}, classes={self.classes}: both must be >= 1")
        if self.n * self.classes > INT_MAX:
            raise ValueError(f"n*classes = {self.n * self.classes} is too many for one launch")
        if label_type not in LABEL_TYPES:
            raise ValueError(f"label_type={label_type!r}: expected one of {tuple(LABEL_TYPES)}")
        self.label_type = label_type
        self.label_dtype = LABEL_TYPES[label_type]
        self.params = params or LossParams.defaults(device.features)
        self.launch = Launch(
            device, self.params, self.kernel_name,
            [None, None, np.int32, np.float32, None, None, None],
            lambda p: p.global_size(self.n),
            n=self.n, classes=self.classes, loss=self.kernel_name, label_type=label_type)
        self.params = self.launch.params

    def __call__(self, logits, labels, dlogits, row_loss, row_correct, global_n, labels_off=0,
                 wait_for=None):
        """logits, dlogits float32 [n, classes]; labels int32/uint8 from element labels_off;
        row_loss float32 [n] and row_correct int32 [n] are written. Returns the event."""
        if global_n <= 0:
            raise ValueError(f"global_n={global_n} must be positive")
        return self.launch(logits, labels, int(labels_off), float(global_n), dlogits, row_loss,
                           row_correct, wait_for=wait_for)


class SoftmaxCE(_Loss):
    """Softmax + cross-entropy against integer class labels."""
    kernel_name = "softmax_ce"


class SigmoidBCE(_Loss):
    """Per-output sigmoid + binary cross-entropy against the one-hot target of the label."""
    kernel_name = "sigmoid_bce"
