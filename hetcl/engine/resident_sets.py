"""Data sets kept on the devices: uint8 images and labels uploaded once to each device
(replica.Resident), so that a step sends only its batch's sample indices and the gather kernel
normalises (x/255 - mean)/std on the device. Runtime holds one ResidentSets and runs the steps
(runtime.py: train_step_indices, evaluate_indices); this module knows nothing of the step."""
import numpy as np

from ..model import inputs
from .replica import Resident


class ResidentSets:
    """The uploads, one per (device, images, labels), and each set's label range. Sets are
    keyed by the arrays' id(): the caller keeps the arrays alive and unchanged while in use."""

    def __init__(self):
        self._uploads = {}       # (device index, id(images), id(labels)) -> Resident
        self._label_ranges = {}  # (id(images), id(labels)) -> (min, max)

    def get(self, device, images, labels, mean=0.0, std=1.0):
        """uint8 images [N, ...] and labels [N] uploaded once to the device (cached)."""
        key = (device.index, id(images), id(labels))
        if key not in self._uploads:
            self._uploads[key] = Resident(device, images, labels, mean, std)
        return self._uploads[key]

    def check(self, model, images, labels):
        """Images, labels and the model checked before a step or an evaluation on a resident
        set (inputs.py); the labels' range is taken once per set, like its upload."""
        inputs.check_images(images)
        inputs.check_sample_shape(model, images.shape[1:], "images")
        key = (id(images), id(labels))
        if key not in self._label_ranges:
            self._label_ranges[key] = inputs.resident_label_range(images, labels)
        inputs.check_label_range(*self._label_ranges[key], inputs.classes(model))

    def feed(self, images, labels, indices, mean=0.0, std=1.0):
        """-> feed(executor, a, b) for a step (Runtime.step_on_devices): gathers samples
        indices[a:b] (int32, checked: inputs.indices) on the executor's device."""
        return lambda ex, a, b: ex.gather(
            self.get(ex.replica.device, images, labels, mean, std), indices[a:b])

    def predict(self, ex, images, labels, mean=0.0, std=1.0):
        """-> predicted class per sample of the set, in batches of the executor's size on its
        device."""
        data = self.get(ex.replica.device, images, labels, mean, std)
        preds = []
        for start in range(0, len(images), ex.n):
            idx = np.arange(start, start + ex.n, dtype=np.int32)
            idx[idx >= len(images)] = len(images) - 1  # pad the last batch with a repeat
            ex.gather(data, idx)
            preds.append(ex.forward().get().argmax(axis=1)[:len(images) - start])
        return np.concatenate(preds)
