"""Staging for a streamed data set (device_data.Streamed): the layout of a slot that carries
rows of the set to a device in one upload (SlotLayout), and the per-step staging a step uses
where its rows were not uploaded ahead in a chunk (Stage; chunks.py holds the chunks).

A slot's bytes, each part starting at a multiple of `align` bytes (a sub-buffer start):
    images uint8 [rows, sample_size] | labels label_type [rows] | keys int32 [rows]
the keys being the rows' data-set indices (the augmentation's draws follow them).
"""
import numpy as np

from ..backend.buffers import base_align_elements, empty, packed_offsets, pinned_empty, \
    to_device

# A step's upload of at most this many bytes goes on the device's main queue, in order before
# the gather: its transfer is a few microseconds of device time, less than what waiting on the
# copy queue's event from the main queue costs the host (a flush and a cross-queue dependency
# per step: docs/benchmarks.md, "Streamed data"). Larger uploads go on the copy queue, so that
# the transfer overlaps the previous step's kernels.
MAIN_QUEUE_UPLOAD_BYTES = 1 << 20


def fill_rows(views, images, labels, idx):
    """The rows idx of the host images and labels, and idx as their keys, into the first
    len(idx) rows of a host slot's views [images, labels, keys]."""
    x, y, keys = views
    n = len(idx)
    # (mode="clip": the indices are checked; numpy buffers an output under "raise")
    np.take(images, idx, axis=0, out=x[:n], mode="clip")
    np.take(labels, idx, out=y[:n], mode="clip")
    keys[:n] = idx


class SlotLayout:
    """Where a slot of `rows` rows keeps its images, labels and keys (module docstring)."""

    def __init__(self, rows, sample_size, label_type, align):
        self.rows = int(rows)
        self.parts = (((self.rows, int(sample_size)), np.dtype(np.uint8)),
                      ((self.rows,), np.dtype(label_type)), ((self.rows,), np.dtype(np.int32)))
        self.part_bytes = [int(np.prod(shape)) * dtype.itemsize for shape, dtype in self.parts]
        self.offsets, self.nbytes = packed_offsets(self.part_bytes, int(align))

    def host_views(self, array):
        """[images, labels, keys] as numpy views of a host slot (uint8 [nbytes])."""
        return [array[at:at + size].view(dtype).reshape(shape) for at, size, (shape, dtype)
                in zip(self.offsets, self.part_bytes, self.parts)]

    def device_views(self, array):
        """[images, labels, keys] as sub-buffers of a device slot (uint8 [nbytes])."""
        return [array.sub(at, shape, dtype) for at, (shape, dtype) in zip(self.offsets,
                                                                          self.parts)]


class Stage:
    """A step's rows copied on the host into one of two pinned slots and uploaded without
    blocking the host, so that the host prepares a step while the kernels of the one before
    still compute (double buffering); an upload over MAIN_QUEUE_UPLOAD_BYTES goes on the
    device's copy queue, where the transfer overlaps those kernels too. A slot is written again
    only after the gather that read it has run. n: the executor's batch."""

    def __init__(self, device, n, sample_size, label_type):
        self.device, self.slot = device, 0
        self.layout = SlotLayout(n, sample_size, label_type, base_align_elements(device, np.uint8))
        # (the queue itself is asked for per upload: a role's queue changes when the device
        # switches profiling on or off, backend/device.py)
        self.on_copy_queue = self.layout.nbytes > MAIN_QUEUE_UPLOAD_BYTES
        self.host = [pinned_empty(device, (self.layout.nbytes,), np.uint8) for _ in range(2)]
        self.dev = [empty(device, (self.layout.nbytes,), np.uint8) for _ in range(2)]
        self.views = [self.layout.device_views(d) for d in self.dev]
        self.host_views = [self.layout.host_views(h) for h in self.host]
        # per slot: the upload's event (kept: dropping it would wait for it) and the gather
        # that last read the slot
        self.uploads, self.readers = [None, None], [None, None]
        # rows 0..n-1 of a slot, in order: the staging arrays hold the step's samples already
        self.arange = to_device(device, np.arange(n, dtype=np.int32))

    def upload(self, images, labels, idx):
        """The rows idx of the host arrays to the device. -> (images, labels, rows, keys,
        wait_for, first) for the gather (device_data's module docstring)."""
        self.slot ^= 1
        if self.readers[self.slot] is not None:  # the host must not overwrite what is read
            self.readers[self.slot].wait()
        fill_rows(self.host_views[self.slot], images, labels, idx)
        queue = self.device.copy_queue if self.on_copy_queue else self.device.queue
        event = self.uploads[self.slot] = self.dev[self.slot].set(
            self.host[self.slot], wait=False, queue=queue)
        x, y, keys = self.views[self.slot]
        if not self.on_copy_queue:  # in order before the gather on the same queue: no wait
            return x, y, self.arange, keys, None, 0
        queue.flush()  # a command waited on from another queue must be flushed (spec)
        return x, y, self.arange, keys, [event], 0

    def read_by(self, event):
        self.readers[self.slot] = event
