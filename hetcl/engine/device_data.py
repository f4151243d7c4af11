"""A uint8 data set as one device sees it: whole on the device (Resident) or, when it does not
fit the device's data budget, streamed from host memory a step's rows at a time (Streamed).

Both answer rows(executor, host_indices) with what the gather kernel reads for a step:
(images, labels, rows, keys, wait_for, first) - the uint8 images [M, sample] and labels [M] on
the device, the int32 rows of them to take from element `first` on, the int32 keys of the
augmentation's random draws (from element `first` too: the step's data-set indices, for both
kinds, so a streamed step gathers the same values as a resident one), and the events the
gather waits for. A resident set's rows and keys are the same upload
(executor.upload_indices); a streamed set's rows and keys come in a chunk uploaded ahead
(chunks.py) or in the step's own staging upload (staging.py).
"""
import numpy as np

from ..backend.buffers import to_device
from .chunks import DeviceChunks
from .staging import Stage

LABEL_TYPES = (np.uint8, np.int32)  # labels on the device: uint8 up to 256 classes, else int32


def label_type(hi):
    """The device type of labels whose largest value is hi."""
    return np.uint8 if hi < 256 else np.int32


def host_arrays(images, labels, labels_hi):
    """The set's images [N, sample_size] uint8 and labels [N] in their device type, as the
    host keeps them for the devices (no copy where they are so already)."""
    images = np.ascontiguousarray(images, np.uint8)
    return (images.reshape(len(images), -1),
            np.ascontiguousarray(labels, label_type(labels_hi)))


class _DataSet:
    """What both kinds hold: the set's sample shape, its labels' device type, its
    normalisation, and the host's images and labels (host_arrays)."""

    def __init__(self, images, labels, mean, std, labels_hi):
        self.sample_shape = tuple(int(s) for s in images.shape[1:])
        self.sample_size = int(np.prod(self.sample_shape))
        self.label_type = label_type(labels_hi)
        self.host_images, self.host_labels = host_arrays(images, labels, labels_hi)
        self.mean, self.std = float(mean), float(std)


class Resident(_DataSet):
    """A uint8 data set held on one device: images [N, sample_size], labels [N] (label_type)."""

    def __init__(self, device, images, labels, mean, std, labels_hi):
        super().__init__(images, labels, mean, std, labels_hi)
        self.images = to_device(device, self.host_images)
        self.labels = to_device(device, self.host_labels)

    def rows(self, executor, host_indices):
        indices = executor.upload_indices(host_indices)
        return self.images, self.labels, indices, indices, None, 0

    def read_by(self, executor, event):
        """(the gather reads resident memory that nothing overwrites)"""


class Streamed(_DataSet):
    """A uint8 data set left in host memory. A step's rows come from a chunk of steps uploaded
    ahead (chunks.py), where the caller said which steps come (HostChunks.plan), else from the
    step's own staging upload (staging.Stage, one per executor). ahead: the set's HostChunks,
    shared by its copies on every device."""

    def __init__(self, device, images, labels, mean, std, labels_hi, ahead):
        super().__init__(images, labels, mean, std, labels_hi)
        self.device, self.ahead = device, ahead
        ahead.serve(device)
        self._stages = {}    # id(executor) -> staging.Stage
        self._chunks = None  # DeviceChunks, made at the first step of a chunk (again where
        #                      the host's chunks were sized anew)
        self._readers = {}   # id(executor) -> read_by(event) of what its last gather read

    def rows(self, executor, host_indices):
        found = self.ahead.locate(host_indices)
        if found is not None:
            chunk, first = found
            if self._chunks is None or self._chunks.layout is not self.ahead.layout:
                self._chunks = DeviceChunks(self.device, self.ahead)
            self._readers[id(executor)] = self._chunks.reader(chunk.slot)
            return self._chunks.rows_for(chunk, first)
        stage = self._stages.get(id(executor))
        if stage is None:
            stage = self._stages[id(executor)] = Stage(self.device, executor.n,
                                                      self.sample_size, self.label_type)
        self._readers[id(executor)] = stage.read_by
        return stage.upload(self.host_images, self.host_labels, host_indices)

    def read_by(self, executor, event):
        self._readers[id(executor)](event)
