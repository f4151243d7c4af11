"""A uint8 data set as one device sees it: whole on the device (Resident) or, when it does not
fit the device's data budget, streamed from host memory a step's rows at a time (Streamed).

Both answer rows(executor, host_indices) with what the gather kernel reads for a step:
(images, labels, rows, keys, wait_for) - the uint8 images [M, sample] and labels [M] on the
device, the int32 rows of them to take, the int32 keys of the augmentation's random draws (the
step's data-set indices, for both kinds: a streamed step gathers the same values as a resident
one), and the events the gather waits for. A resident set's rows and keys are the same upload
(executor.upload_indices); a streamed set's keys travel in its staging upload.
"""
import numpy as np

from ..backend.buffers import base_align_elements, empty, pinned_empty, to_device
from ..codegen.launch import round_up

LABEL_TYPES = (np.uint8, np.int32)  # labels on the device: uint8 up to 256 classes, else int32
# A streamed step's upload of at most this many bytes goes on the device's main queue, in order
# before the gather: its transfer is a few microseconds of device time, less than what waiting
# on the copy queue's event from the main queue costs the host (a flush and a cross-queue
# dependency per step: docs/benchmarks.md, "Streamed data"). Larger uploads go on the copy
# queue, so that the transfer overlaps the previous step's kernels.
MAIN_QUEUE_UPLOAD_BYTES = 1 << 20


def label_type(hi):
    """The device type of labels whose largest value is hi."""
    return np.uint8 if hi < 256 else np.int32


class _DataSet:
    """What both kinds hold: the set's sample shape, its labels' device type, its
    normalisation, and the host's images [N, sample_size] and labels [N] in those types."""

    def __init__(self, images, labels, mean, std, labels_hi):
        self.sample_shape = tuple(int(s) for s in images.shape[1:])
        self.sample_size = int(np.prod(self.sample_shape))
        self.label_type = label_type(labels_hi)
        self.host_images = np.ascontiguousarray(images, np.uint8).reshape(
            len(images), self.sample_size)
        self.host_labels = np.ascontiguousarray(labels, self.label_type)
        self.mean, self.std = float(mean), float(std)


class Resident(_DataSet):
    """A uint8 data set held on one device: images [N, sample_size], labels [N] (label_type)."""

    def __init__(self, device, images, labels, mean, std, labels_hi):
        super().__init__(images, labels, mean, std, labels_hi)
        self.images = to_device(device, self.host_images)
        self.labels = to_device(device, self.host_labels)

    def rows(self, executor, host_indices):
        indices = executor.upload_indices(host_indices)
        return self.images, self.labels, indices, indices, None

    def read_by(self, executor, event):
        """(the gather reads resident memory that nothing overwrites)"""


class Streamed(_DataSet):
    """A uint8 data set left in host memory. Each step's rows are copied on the host into one of
    two pinned staging arrays per executor and uploaded without blocking the host, so that the
    host prepares a step while the kernels of the one before still compute (double buffering);
    a large upload goes on the device's copy queue, where the transfer overlaps those kernels
    too (MAIN_QUEUE_UPLOAD_BYTES). A slot is written again only after the gather that read it
    has run. ahead: the set's HostRows (shared by its copies on every device), whose batch
    gathered ahead the rows come from where the step's indices are a run of it."""

    def __init__(self, device, images, labels, mean, std, labels_hi, ahead):
        super().__init__(images, labels, mean, std, labels_hi)
        self.device, self.ahead = device, ahead
        self._stages = {}  # id(executor) -> _Stage

    def rows(self, executor, host_indices):
        stage = self._stages.get(id(executor))
        if stage is None:
            stage = self._stages[id(executor)] = _Stage(self.device, executor.n,
                                                       self.sample_size, self.label_type)
        return stage.upload(self.host_images, self.host_labels, host_indices, self.ahead)

    def read_by(self, executor, event):
        self._stages[id(executor)].read_by(event)


class _Stage:
    """Two slots used in turn, each one pinned host array and one device buffer of uint8 holding
    a step's images [n, sample_size], then its labels [n] (labels_type), then its keys [n]
    (int32), each part at a sub-buffer-aligned byte offset - so that a step is one upload."""

    def __init__(self, device, n, sample_size, labels_type):
        self.device, self.slot = device, 0
        parts = (((n, sample_size), np.uint8), ((n,), labels_type), ((n,), np.int32))
        nbytes = [int(np.prod(shape)) * np.dtype(dtype).itemsize for shape, dtype in parts]
        align, offsets, size = base_align_elements(device, np.uint8), [], 0
        for part_bytes in nbytes:
            offsets.append(size)
            size = round_up(size + part_bytes, align)
        # (the queue itself is asked for per upload: a role's queue changes when the device
        # switches profiling on or off, backend/device.py)
        self.on_copy_queue = size > MAIN_QUEUE_UPLOAD_BYTES
        self.host = [pinned_empty(device, (size,), np.uint8) for _ in range(2)]
        self.dev = [empty(device, (size,), np.uint8) for _ in range(2)]
        self.views = [[d.sub(at, shape, dtype) for at, (shape, dtype) in zip(offsets, parts)]
                      for d in self.dev]
        self.host_views = [[h[at:at + part_bytes].view(dtype).reshape(shape)
                            for at, part_bytes, (shape, dtype) in zip(offsets, nbytes, parts)]
                           for h in self.host]
        # per slot: the upload's event (kept: dropping it would wait for it) and the gather
        # that last read the slot
        self.uploads, self.readers = [None, None], [None, None]
        # rows 0..n-1 of a slot, in order: the staging arrays hold the step's samples already
        self.arange = to_device(device, np.arange(n, dtype=np.int32))

    def upload(self, images, labels, idx, ahead):
        self.slot ^= 1
        host_x, host_y, host_keys = self.host_views[self.slot]
        if self.readers[self.slot] is not None:  # the host must not overwrite what is read
            self.readers[self.slot].wait()
        n = len(idx)
        if not ahead.take(idx, host_x[:n], host_y[:n]):
            np.take(images, idx, axis=0, out=host_x[:n])
            np.take(labels, idx, out=host_y[:n])
        host_keys[:n] = idx
        queue = self.device.copy_queue if self.on_copy_queue else self.device.queue
        event = self.uploads[self.slot] = self.dev[self.slot].set(
            self.host[self.slot], wait=False, queue=queue)
        x, y, keys = self.views[self.slot]
        if not self.on_copy_queue:  # in order before the gather on the same queue: no wait
            return x, y, self.arange, keys, None
        queue.flush()  # a command waited on from another queue must be flushed (spec)
        return x, y, self.arange, keys, [event]

    def read_by(self, event):
        self.readers[self.slot] = event


class HostRows:
    """A streamed set's next batch gathered ahead on the host: given the next step's indices
    (start), a worker thread takes their images and labels from host memory - random rows, a
    read from main memory each - while the main thread enqueues and waits on the current step
    (np.take releases the GIL); the step then copies its run of that batch from the cache
    (take). pool: the one-thread executor the work runs on."""

    def __init__(self, pool):
        self.pool = pool
        self.job = None  # (indices [n] int32, future of (images [n, sample], labels [n]))

    def start(self, images, labels, indices):
        """Gather the rows of `indices` (checked) of the host arrays in the background."""
        idx = np.array(indices, np.int32)
        self.job = (idx, self.pool.submit(lambda: (np.take(images, idx, axis=0),
                                                   np.take(labels, idx))))

    def take(self, idx, out_images, out_labels):
        """Copy the rows of idx into the outputs where idx is a run of the batch gathered ahead
        (one device's share of it); -> False where it is not (nothing gathered ahead, or other
        indices): the caller gathers them itself."""
        if self.job is None or not len(idx):
            return False
        ahead, future = self.job
        n = len(idx)
        for at in np.flatnonzero(ahead[:len(ahead) - n + 1] == idx[0]):
            if np.array_equal(ahead[at:at + n], idx):
                images, labels = future.result()
                out_images[...] = images[at:at + n]
                out_labels[...] = labels[at:at + n]
                return True
        return False
