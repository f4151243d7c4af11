"""Data sets on the devices: uint8 images and labels uploaded once to each device
(device_data.Resident), or streamed a step at a time where a set is larger than the device's
data budget (device_data.Streamed), so that a step sends only its batch's sample indices and
the gather kernel normalises (x/255 - mean)/std - and augments - on the device. Runtime holds
one ResidentSets and runs the steps (runtime.py: train_step_indices, evaluate_indices); this
module knows nothing of the step."""
import collections
import concurrent.futures
import dataclasses

import numpy as np

from .. import settings
from ..backend import affinity
from ..model import inputs
from .chunks import HostChunks
from .device_data import Resident, Streamed, host_arrays

# Evaluation: batches whose logits the host has not taken yet (a host array each).
READS_IN_FLIGHT = 4
# The default data budget of a device: this share of its memory (the rest holds the model's
# activations, gradients and the kernels' scratch), and never more than one allocation.
DATA_BUDGET_SHARE = 1 / 4


@dataclasses.dataclass(frozen=True)
class Augment:
    """On-device augmentation of a training step's images (torchvision's RandomCrop with
    `pad` pixels of zero padding, then RandomHorizontalFlip where `flip`), drawn per sample
    from (seed, epoch, the sample's index in the data set): any split of the batch over
    devices, and a resumed run, see the same images."""
    pad: int = 0
    flip: bool = False
    seed: int = 0
    epoch: int = 0

    def __post_init__(self):
        if not 0 <= int(self.pad) <= 64:
            raise inputs.InputError(f"augmentation padding must be 0..64 pixels, got {self.pad}")


NO_AUGMENT = Augment()


def data_budget(device):
    """Bytes of a data set's images the device keeps (settings: HETCL_DATA_BUDGET)."""
    budget = settings.data_budget()
    if budget is None:
        budget = min(int(device.profile["global_mem_bytes"] * DATA_BUDGET_SHARE),
                     device.profile["max_alloc_bytes"])
    return budget


class ResidentSets:
    """The device copies, one per (device, images, labels), and each set's label range. Sets
    are keyed by the arrays' id(): the caller keeps the arrays alive and unchanged while in
    use."""

    def __init__(self):
        self._uploads = {}       # (device index, id(images), id(labels)) -> Resident/Streamed
        self._label_ranges = {}  # (id(images), id(labels)) -> (min, max)
        self._ahead = {}         # (id(images), id(labels)) -> HostChunks of a streamed set
        self._pool = None        # the thread HostChunks gather on (made on first use)

    def get(self, device, images, labels, mean=0.0, std=1.0):
        """The set on the device (cached): whole where its images fit the device's data
        budget, else streamed from host memory."""
        key = (device.index, id(images), id(labels))
        if key not in self._uploads:
            hi = self._label_ranges.get((id(images), id(labels)), (0, int(np.max(labels))))[1]
            if images.nbytes <= data_budget(device):
                self._uploads[key] = Resident(device, images, labels, mean, std, hi)
            else:
                if key[1:] not in self._ahead:
                    self._ahead[key[1:]] = HostChunks(self._worker(),
                                                      *host_arrays(images, labels, hi))
                self._uploads[key] = Streamed(device, images, labels, mean, std, hi,
                                              self._ahead[key[1:]])
        return self._uploads[key]

    def plan(self, images, labels, upcoming):
        """After a step: where the set streams to some device, its coming steps' rows (upcoming:
        their indices in order, or None) are gathered and uploaded ahead in chunks
        (chunks.HostChunks.plan); else nothing."""
        ahead = self._ahead.get((id(images), id(labels)))
        if ahead is not None:
            ahead.plan(upcoming)

    def _worker(self):
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(
                1, "hetcl-rows", initializer=affinity.leave_pinned_core)
        return self._pool

    def check(self, model, images, labels):
        """Images, labels and the model checked before a step or an evaluation on a resident
        set (inputs.py); the labels' range is taken once per set, like its upload."""
        inputs.check_images(images)
        inputs.check_sample_shape(model, images.shape[1:], "images")
        key = (id(images), id(labels))
        if key not in self._label_ranges:
            self._label_ranges[key] = inputs.label_range(labels, len(images))
        inputs.check_label_range(*self._label_ranges[key], inputs.classes(model))

    def feed(self, images, labels, indices, mean=0.0, std=1.0, augment=NO_AUGMENT):
        """-> feed(executor, a, b) for a step (Runtime.step_on_devices): gathers samples
        indices[a:b] (int32, checked: inputs.indices) on the executor's device."""
        return lambda ex, a, b: ex.gather(
            self.get(ex.replica.device, images, labels, mean, std), indices[a:b], augment)

    def predict(self, ex, images, labels, mean=0.0, std=1.0):
        """-> predicted class per sample of the set, in batches of the executor's size on its
        device. The host does not wait for a batch's logits before it enqueues the next: each
        batch's are read into a host array of their own without blocking (the in-order queue
        reads them before the next batch's forward pass overwrites them), and taken once
        READS_IN_FLIGHT batches are queued behind them."""
        data = self.get(ex.replica.device, images, labels, mean, std)
        preds, pending = [], collections.deque()  # (start, host logits, read's event)
        for start in range(0, len(images), ex.n):
            idx = np.arange(start, start + ex.n, dtype=np.int32)
            idx[idx >= len(images)] = len(images) - 1  # pad the last batch with a repeat
            ex.gather(data, idx)
            out = ex.forward()
            logits = np.empty(out.shape, out.dtype)
            pending.append((start, logits, out.get_async(logits)))
            while len(pending) > READS_IN_FLIGHT or (pending and start + ex.n >= len(images)):
                first, logits, read = pending.popleft()
                read.wait()
                preds.append(logits.argmax(axis=1)[:len(images) - first])
        return np.concatenate(preds)
