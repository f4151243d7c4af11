"""Gradient all-reduce across the devices of one process: per layer, overlapped with backward.

Each device has two in-order queues: the main one runs the step's kernels, the copy queue moves
gradients. As soon as a layer's backward kernels are enqueued, its gradients are read back on
the copy queue (waiting only for that layer's last kernel) into page-locked host buffers, so the
main queue goes straight on to earlier layers (Lee et al., HiPC 2017). Each device then gets the
other devices' copies uploaded on its copy queue and adds them on its main queue. Where the
devices share a context (one platform: device.share_contexts) each upload waits on the peer's
read event and the host waits for nothing, so it can go on enqueueing the next step while the
gradients travel; across contexts (e.g. a GPU and PoCL's CPU) events cannot be shared, so the
host waits for the layers' reads in the order backward produced them (last layer first) before
it enqueues their uploads. The host does no arithmetic and every transfer overlaps the
remaining backward.

Across MPI ranks (mpi.py) the layer's local copies are summed on the host in device order
instead, the rank sum is started at once (a communication thread, or Iallreduce), and each
finished sum is uploaded back over every local gradient; the optimizer waits for those uploads.

The sum is taken in a fixed device order, ((g0 + g1) + g2) + ..., on every device, so all
replicas get bitwise the same gradients (float addition is commutative, so devices 0 and 1
may add their own first; from device 2 on the sum is built in a staging buffer). Every shard's
loss is already divided by the global batch size, so the plain sum is the gradient of the whole
batch; the same optimizer step then runs on each replica, which keeps them identical.
"""
import time
from typing import NamedTuple

import numpy as np
import pyopencl as cl

from ..backend.buffers import empty, pinned_empty
from ..backend.device import event_seconds
from ..codegen.update import Axpby
from .trace import Tracer


class LayerRead(NamedTuple):
    """One layer's gradients read back from one device (in backward order, last layer first)."""
    name: str        # the layer's parameter names, joined by ","
    event: object    # the read (cl.Event) on the device's copy queue
    host: object     # the pinned host copy it lands in (numpy)
    grad: object     # the layer's gradient region on the device (Array)
    nbytes: int      # its size without alignment gaps


class _Run:
    """One device's part of a step: its executor and its layer reads, in backward order."""

    def __init__(self, ex):
        self.ex, self.device = ex, ex.replica.device
        self.reads = []          # LayerRead per layer with parameters, in backward order
        self.last_kernel = None  # the device's last backward kernel with parameter gradients
        self.kernels = 0         # how many of device.kernel_events belong to the step
        self.uploads = []        # upload events of this step


class GradientExchange:
    def __init__(self, tracer=None):
        self.tracer = tracer or Tracer()  # trace.py
        self._host = {}     # (parity, device index, name) -> pinned host buffer reads land in
        self._staging = {}  # (device index, peer position, name) -> peer's copy on that device
        self._axpby = {}    # (device index, size) -> y = x + y kernel
        self.runs = []
        self.parity = 1
        self.bytes = 0  # bytes read from and uploaded to the devices in this step

    def begin(self):
        """A new step. Host buffers alternate between even and odd steps, so that no one waits
        for a step's uploads to finish: a buffer is read into again two steps later, and by
        then this step's uploads from it are done - the read of step k+2 on a device waits for
        that device's step k+2 backward, which its main queue runs after its step k+1 adds,
        which wait for the uploads of the peers' step k+1 reads, which follow the peers' step
        k adds, which wait for this step's uploads (the host waits for nothing of this)."""
        for run in self.runs:  # the last step's transfers may still run: dropping their
            run.device.retire(*[read.event for read in run.reads], *run.uploads)  # events waits
        self.runs = []
        self.parity ^= 1
        self.bytes = 0

    def reader(self, ex):
        """Callback for Executor.backward: read one node's parameter gradients back."""
        run = _Run(ex)
        self.runs.append(run)
        device = run.device

        def on_node(names):
            run.last_kernel = device.last_kernel
            run.kernels = len(device.kernel_events or ())
            # a layer's gradients lie in one region (Replica): one read, upload and add
            grad, nbytes = ex.replica.grad_span(names)
            name = ",".join(names)
            key = (self.parity, device.index, name)
            if key not in self._host:
                self._host[key] = pinned_empty(device, grad.shape)
            event = grad.get_async(self._host[key], wait_for=[run.last_kernel],
                                   queue=device.copy_queue)
            self.bytes += nbytes  # (a layer's alignment gaps, < 4 KiB, travel uncounted)
            run.reads.append(LayerRead(name, event, self._host[key], grad, nbytes))
            # The spec requires a flush of commands that another queue waits on: the kernels
            # the reads wait for, the reads the peers' uploads wait for.
            device.queue.flush()
            device.copy_queue.flush()
        return on_node

    def _add(self, device, x, y, wait_for):
        key = (device.index, y.size)
        if key not in self._axpby:
            self._axpby[key] = Axpby(device, y.size)
        self._axpby[key](x, y, 1.0, 1.0, wait_for=wait_for)

    def _sum_on(self, position, name, k, chained):
        """Enqueue, on the device at `position`, the fixed-order sum of layer k's gradients.
        chained: the devices share a context, so each upload waits on its peer's read event
        (else the host has waited for the reads)."""
        started = time.perf_counter()
        self._enqueue_sum(position, name, k, chained)
        self.tracer.phase("sum", time.perf_counter() - started)

    def _enqueue_sum(self, position, name, k, chained):
        run = self.runs[position]
        device, own, nbytes = run.device, run.reads[k].grad, run.reads[k].nbytes
        terms = []
        for p, peer in enumerate(self.runs):
            if p == position:
                terms.append(own)
                continue
            key = (device.index, p, name)
            if key not in self._staging:
                self._staging[key] = empty(device, own.shape)
            event = self._staging[key].set(peer.reads[k].host, wait=False,
                                           queue=device.copy_queue,
                                           wait_for=[peer.reads[k].event] if chained else None)
            run.uploads.append(event)
            self.bytes += nbytes
            terms.append(self._staging[key])
        waits = run.uploads[-(len(terms) - 1):]
        if position <= 1:  # own + the other of the first two, then the rest in order
            acc, rest = own, terms[2:]
            self._add(device, terms[1 - position], acc, waits)
        else:
            acc, rest = terms[0], terms[1:]
        for term in rest:
            self._add(device, term, acc, waits)
        if acc is not own:
            cl.enqueue_copy(device.queue, own.buffer, acc.buffer)

    def _local_total(self, name, k):
        """Host sum, in device order, of layer k's copies (the copy itself for one device)."""
        if len(self.runs) == 1:
            return self.runs[0].reads[k].host
        key = (self.parity, "total", name)
        first = self.runs[0].reads[k].host
        if key not in self._host:
            self._host[key] = pinned_empty(self.runs[0].device, first.shape)
        total = self._host[key]
        np.copyto(total, first)
        for run in self.runs[1:]:
            np.add(total, run.reads[k].host, out=total)
        return total

    def _put_back(self, k, total):
        """Upload a finished sum over every local replica's gradient (layer k of the reads, on
        the copy queue); the main queue waits for it before the optimizer."""
        for run in self.runs:
            event = run.reads[k].grad.set(total, wait=False, queue=run.device.copy_queue)
            run.device.copy_queue.flush()  # (the main queue waits for it)
            run.uploads.append(event)
            self.bytes += run.reads[k].nbytes
            cl.enqueue_barrier(run.device.queue, wait_for=[event])

    def _progress(self, world, in_flight):
        """Test the oldest rank sum (MPI progresses inside such calls); put it back if done,
        else yield the CPU briefly (CPU devices compute on the same cores)."""
        if world.done(in_flight[0][1]):
            k, _, total = in_flight.pop(0)
            self._put_back(k, total)
        else:
            time.sleep(5e-5)

    def reduce(self, world=None, measure=True):
        """Wait for the reads layer by layer and enqueue each layer's sum on every device
        (across ranks too, with an mpi.World).
        -> per device: (seconds its kernels ran up to its last backward kernel, seconds of
                        gradient transfers), or None without `measure`; uploads and sums are
                        left in flight."""
        started = time.perf_counter()
        firsts = [(run.device.kernel_events or [None])[0] for run in self.runs]
        times = self._reduce(world, measure)
        self.tracer.phase("exchange", time.perf_counter() - started, measured=measure)
        if times is not None:
            self.tracer.exchanged(self.runs, times, firsts)
        return times

    def _reduce(self, world, measure):
        names = [read.name for read in self.runs[0].reads]
        in_flight = []  # MPI: (k, request, host array) in layer order
        chained = world is None and all(run.device.context is self.runs[0].device.context
                                        for run in self.runs)
        for k, name in enumerate(names):
            for run in [] if chained else self.runs:
                event = run.reads[k].event
                while world and in_flight and \
                        event.command_execution_status != cl.command_execution_status.COMPLETE:
                    self._progress(world, in_flight)  # MPI moves on while the device works
                event.wait()
            if world is None:
                for position in range(len(self.runs)):
                    self._sum_on(position, name, k, chained)
                continue
            total = self._local_total(name, k)
            in_flight.append((k, world.start_sum(total), total))
            self._progress(world, in_flight)
        for k, request, total in in_flight:
            world.wait(request, f"the gradients of {names[k]}")
            self._put_back(k, total)
        for run in self.runs:  # the uploads that the adds on the main queues wait for
            run.device.copy_queue.flush()
        if not measure:
            return None
        for run in self.runs:  # (one wait list may only hold events of one context)
            if run.reads:
                cl.wait_for_events([read.event for read in run.reads])
        times = []
        for run in self.runs:
            times.append((self._busy(run), sum(event_seconds(read.event) for read in run.reads) *
                          len(self.runs)))  # it also receives each peer's copy, as long
        return times

    @staticmethod
    def _busy(run):
        """Seconds the device spent running the step's kernels (the runtime turns on
        device.kernel_events for the step). Not the span from first to last kernel: where the
        host enqueues slower than a GPU computes, the span measures the host."""
        events = (run.device.kernel_events or [])[:run.kernels]
        run.device.kernel_events = None
        return sum(map(event_seconds, events)) if events else None
