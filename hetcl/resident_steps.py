"""Training and evaluation on a uint8 data set uploaded once to each device (executor.Resident):
each step sends only the batch's sample indices, and the gather kernel normalises
(x/255 - mean)/std on the device. A mixin of runtime.Runtime (its _step, _update, executor()
and _profiling_restored)."""
import numpy as np

from .executor import Resident


class ResidentSteps:
    def resident(self, device, images, labels, mean=0.0, std=1.0):
        """uint8 images [N, ...] and labels [N] uploaded once to the device (cached)."""
        key = (device.index, id(images), id(labels))
        if key not in self._resident:
            self._resident[key] = Resident(device, images, labels, mean, std)
        return self._resident[key]

    def train_step_indices(self, model, opt, images, labels, indices, mean=0.0, std=1.0,
                           return_correct=False, defer=False):
        """One SGD step on samples `indices` of a uint8 data set kept on every device; the
        kernels normalise (x/255 - mean)/std while gathering. defer=True returns a StepResult
        at once, without waiting for the step's loss: read it (get()) after enqueueing the next
        step, and the host prepares that step while the devices still compute this one - with
        several GPUs the host's enqueueing is the limit otherwise (docs/benchmarks.md)."""
        model.build(images.shape[1:])
        indices = np.asarray(indices, np.int32)
        feed = lambda ex, a, b: ex.gather(
            self.resident(ex.replica.device, images, labels, mean, std), indices[a:b])
        with self._profiling_restored():
            result, replicas = self._step(model, len(indices), feed, defer=defer)
            self._update(model, opt, replicas)
        if defer:
            return result
        loss, correct = result.get()
        return (loss, correct) if return_correct else loss

    def evaluate_indices(self, model, images, labels, mean=0.0, std=1.0, batch_size=256):
        """-> predicted class per sample of a resident uint8 set (on the first device)."""
        model.build(images.shape[1:])
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
