"""A streamed data set's coming steps, uploaded several at a time (device_data.Streamed).

Where the caller says which steps come next (Runtime.train_step_indices(..., upcoming=...)),
a worker thread gathers the rows of the next chunk of steps from host memory into a pinned
host slot (HostChunks: random rows, a read from main memory each; np.take releases the GIL),
and each device uploads the whole chunk in one transfer on its copy queue (DeviceChunks) while
it computes the steps of the chunk before. A step of a planned chunk then sends nothing: its
gather reads the step's rows from the device's slot at their row offset (`first`,
kernels/gather.cl.mako). A step that was not planned (no upcoming steps given, or other
indices than planned) stages its own rows (staging.Stage): the same values either way.

Two slots on each side, used in turn: chunk number c lives in slot c % 2 while chunk c + 1
fills the other. Slot layout: staging.SlotLayout, rows = a chunk's steps x the batch, every
part at a multiple of SLOT_ALIGN bytes, the same on the host and on every device.
"""
import functools

import numpy as np

from ..backend.buffers import base_align_elements, empty, pinned_empty, to_device
from ..model import inputs
from .staging import SlotLayout, fill_rows

# A chunk holds as many steps as fit CHUNK_BYTES, at least one and at most CHUNK_STEPS: one
# upload (and one cross-queue wait) per chunk instead of one per step - the host's cost of an
# upload hardly grows with its size - and two slots of it on each device beside the model.
CHUNK_BYTES = 8 << 20
CHUNK_STEPS = 16
# How many coming steps a caller passes (upcoming): the rest of the current chunk and the next.
LOOKAHEAD_STEPS = 2 * CHUNK_STEPS
# Slot parts start at multiples of this many bytes, a sub-buffer start on any device whose
# CL_DEVICE_MEM_BASE_ADDR_ALIGN is at most 32768 bits (drivers report 1024 to 4096).
SLOT_ALIGN = 4096


class Chunk:
    """Steps planned together: each step's int32 indices as bytes (batches: a step's run is
    found by a byte search, far cheaper per step than numpy calls), each batch's first row in
    the slot (starts), the slot, and the worker's future (done: the host slot holds their
    rows)."""

    def __init__(self, number, batches, future):
        self.number, self.slot, self.future = number, number % 2, future
        self.batches = [b.tobytes() for b in batches]
        self.starts = np.cumsum([0] + [len(b) for b in batches]).tolist()

    def find(self, position, idx):
        """-> the slot row of idx's first sample where idx (int32) is a run of the batch at
        position, else None."""
        batch, run = self.batches[position], idx.tobytes()
        at = batch.find(run)
        while at > 0 and at % 4:  # a match must start at a whole index
            at = batch.find(run, at + 1)
        return None if at < 0 or not run else self.starts[position] + at // 4


class HostChunks:
    """The host side of a streamed set's chunks, shared by its copies on every device.
    images [N, sample_size] uint8 and labels [N] (the device's label type): the host arrays;
    pool: the one-thread executor the rows are gathered on."""

    def __init__(self, pool, images, labels):
        self.pool, self.images, self.labels = pool, images, labels
        self.devices = []    # the devices the set streams to (serve)
        self.layout = None   # SlotLayout, sized at the first plan (the batch is known then)
        self.steps = 0       # the most steps of a chunk (sized with the layout)
        self.host, self.host_views = None, None
        self.uploads = [[], []]  # per host slot: the devices' uploads reading it
        self.chunks = {}         # number -> Chunk: the current chunk and the next
        self.at = None           # (Chunk, position) of the step about to run, or None
        self.count = 0           # chunks numbered so far

    def plan(self, upcoming):
        """After a step: where the next step (upcoming[0]) lies in the chunks, and the chunk
        after its chunk started once its steps are known. A next step other than the one
        planned starts a new plan from upcoming; none (None or empty) plans nothing."""
        at, self.at = self._following(), None  # (None until planned: a bad index raises below)
        if upcoming is None or not len(upcoming):
            return
        if self.layout is None or len(upcoming[0]) > self.layout.rows:
            at = None  # (sized for the first step's batch; a larger one: new slots, new plan)
            self._allocate(len(upcoming[0]))
        if at is None or at[0].batches[at[1]] != np.asarray(upcoming[0], np.int32).tobytes():
            self.chunks.clear()
            chunk = self._start(upcoming)
            at = None if chunk is None else (chunk, 0)
        self.at = at
        if at is not None:
            chunk, position = at
            self.chunks.pop(chunk.number - 1, None)
            rest = len(chunk.batches) - position  # upcoming[rest:] lie past this chunk
            if chunk.number + 1 not in self.chunks and len(upcoming) > rest:
                self._start(upcoming[rest:])

    def serve(self, device):
        """The set streams to this device too."""
        self.devices.append(device)

    def locate(self, idx):
        """-> (chunk, slot row of idx[0]) where idx (int32) is a run of the step about to run,
        as planned; else None."""
        if self.at is None or not len(idx):
            return None
        chunk, position = self.at
        first = chunk.find(position, idx)
        return None if first is None else (chunk, first)

    def _following(self):
        """The place after self.at: the next position in its chunk, or the next chunk's first."""
        if self.at is None:
            return None
        chunk, position = self.at
        if position + 1 < len(chunk.batches):
            return chunk, position + 1
        after = self.chunks.get(chunk.number + 1)
        return None if after is None else (after, 0)

    def _allocate(self, batch):
        row_bytes = self.images.shape[1] + self.labels.itemsize + 4
        self.steps = max(1, min(CHUNK_STEPS, CHUNK_BYTES // (batch * row_bytes)))
        self.layout = SlotLayout(self.steps * batch, self.images.shape[1], self.labels.dtype,
                                 SLOT_ALIGN)
        # Page-locked by a discrete GPU's driver where one is served (the first step, whose
        # split is even, has reached them all): its uploads then go by DMA, where memory of
        # a CPU's context would pass through a bounce buffer; any device uploads from it.
        owner = next((d for d in self.devices if not d.features["unified_memory"]),
                     self.devices[0])
        self.host = [pinned_empty(owner, (self.layout.nbytes,), np.uint8) for _ in range(2)]
        self.uploads = [[], []]  # (the old slots' uploads keep their own arrays alive)
        self.host_views = [self.layout.host_views(h) for h in self.host]

    def _start(self, upcoming):
        """A new chunk of the leading steps of upcoming that fit a slot, its rows gathered in
        the background. -> the Chunk, or None where the first step alone does not fit."""
        sizes = np.cumsum([len(idx) for idx in upcoming[:self.steps]])
        steps = int(np.searchsorted(sizes, self.layout.rows, side="right"))
        if steps == 0:
            return None
        rows = inputs.indices(np.concatenate(upcoming[:steps]), len(self.images))
        batches = np.split(rows, sizes[:steps - 1])
        number, self.count = self.count, self.count + 1
        slot = number % 2
        # (the slot is filled once the uploads of the chunk it held before have run)
        waits, self.uploads[slot] = self.uploads[slot], []
        future = self.pool.submit(_gather_rows, self.host_views[slot], self.images,
                                  self.labels, rows, waits)
        chunk = self.chunks[number] = Chunk(number, batches, future)
        return chunk


def _gather_rows(views, images, labels, idx, waits):
    """(worker) The rows idx into a host slot's views, after the uploads in waits have run."""
    for event in waits:
        event.wait()
    fill_rows(views, images, labels, idx)


class DeviceChunks:
    """A device's two chunk slots, filled from the host's (HostChunks) by one upload each on the
    copy queue, and the row numbers 0..rows-1 of a slot (arange), through which the gather
    reads it."""

    def __init__(self, device, host):
        if base_align_elements(device, np.uint8) > SLOT_ALIGN:
            raise ValueError(f"{device}: sub-buffers must start at multiples of "
                             f"{base_align_elements(device, np.uint8)} bytes, over {SLOT_ALIGN}")
        self.device, self.host, self.layout = device, host, host.layout
        self.slots = [empty(device, (self.layout.nbytes,), np.uint8) for _ in range(2)]
        self.views = [self.layout.device_views(s) for s in self.slots]
        self.arange = to_device(device, np.arange(self.layout.rows, dtype=np.int32))
        self.loaded = [None, None]   # the chunk number in each slot
        self.uploads = [None, None]  # each slot's upload (kept: dropping it would wait for it)
        self.fresh = [False, False]  # the next gather from the slot waits for its upload
        self.readers = [None, None]  # the gather that last read each slot

    def rows_for(self, chunk, first):
        """(images, labels, rows, keys, wait_for, first) for a step's run that starts at slot
        row `first` of chunk; the next chunk's upload enqueued once its rows are gathered."""
        slot = chunk.slot
        if self.loaded[slot] != chunk.number:
            self._upload(chunk)
        wait_for = [self.uploads[slot]] if self.fresh[slot] else None
        self.fresh[slot] = False
        after = self.host.chunks.get(chunk.number + 1)
        if after is not None and self.loaded[after.slot] != after.number and after.future.done():
            self._upload(after)
        x, y, keys = self.views[slot]
        return x, y, self.arange, keys, wait_for, first

    def reader(self, slot):
        """-> read_by(event) for a gather from the slot."""
        return functools.partial(self.readers.__setitem__, slot)

    def _upload(self, chunk):
        """The chunk's host slot to its slot here (the worker's rows waited for), after the
        gathers that read the slot's previous chunk; non-blocking."""
        chunk.future.result()
        slot, reader = chunk.slot, self.readers[chunk.slot]
        if reader is not None:
            self.device.queue.flush()  # waited on from the copy queue: flushed first (spec)
        queue = self.device.copy_queue
        event = self.slots[slot].set(self.host.host[slot], wait=False, queue=queue,
                                     wait_for=None if reader is None else [reader])
        queue.flush()
        self.host.uploads[slot].append(event)
        self.loaded[slot], self.uploads[slot], self.fresh[slot] = chunk.number, event, True
        self.readers[slot] = None
