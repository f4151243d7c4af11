"""Training and evaluation on a uint8 data set uploaded once to each device (replica.Resident):
each step sends only the batch's sample indices, and the gather kernel normalises
(x/255 - mean)/std on the device. A base of runtime.Runtime, using its step_on_devices,
apply_update, executor() and _profiling_restored."""
import numpy as np

from . import inputs
from .replica import Resident


class ResidentSteps:
    def resident(self, device, images, labels, mean=0.0, std=1.0):
        """uint8 images [N, ...] and labels [N] uploaded once to the device (cached)."""
        key = (device.index, id(images), id(labels))
        if key not in self._resident:
            self._resident[key] = Resident(device, images, labels, mean, std)
        return self._resident[key]

    def _check_resident(self, model, images, labels):
        """Images, labels and the model checked before a step or an evaluation on a resident
        set (inputs.py); the labels' range is taken once per set, like its upload."""
        inputs.check_images(images)
        inputs.check_sample_shape(model, images.shape[1:], "images")
        key = (id(images), id(labels))
        if key not in self._label_ranges:
            self._label_ranges[key] = inputs.resident_label_range(images, labels)
        inputs.check_label_range(*self._label_ranges[key], inputs.classes(model))

    def train_step_indices(self, model, opt, images, labels, indices, mean=0.0, std=1.0,
                           return_correct=False, defer=False):
        """One SGD step on samples `indices` of a uint8 data set kept on every device; the
        kernels normalise (x/255 - mean)/std while gathering. defer=True returns a StepResult
        at once, without waiting for the step's loss: read it (get()) after enqueueing the next
        step, and the host prepares that step while the devices still compute this one - with
        several GPUs the host's enqueueing is the limit otherwise (docs/benchmarks.md)."""
        self._check_resident(model, images, labels)
        indices = inputs.indices(indices, len(images))
        feed = lambda ex, a, b: ex.gather(
            self.resident(ex.replica.device, images, labels, mean, std), indices[a:b])
        with self._profiling_restored():
            result, replicas = self.step_on_devices(model, len(indices), feed, defer=defer)
            self.apply_update(model, opt, replicas)
        if defer:
            return result
        loss, correct = result.get()
        return (loss, correct) if return_correct else loss

    def evaluate_indices(self, model, images, labels, mean=0.0, std=1.0, batch_size=256):
        """-> predicted class per sample of a resident uint8 set (on the first device)."""
        self._check_resident(model, images, labels)
        device = self.first_device()
        data = self.resident(device, images, labels, mean, std)
        n = min(batch_size, len(images))
        ex = self.executor(model, device, n)
        preds = []
        for start in range(0, len(images), n):
            idx = np.arange(start, start + n, dtype=np.int32)
            idx[idx >= len(images)] = len(images) - 1  # pad the last batch with a repeat
            ex.gather(data, idx)
            preds.append(ex.forward().get().argmax(axis=1)[:len(images) - start])
        return np.concatenate(preds)
