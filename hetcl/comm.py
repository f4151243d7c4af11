"""Gradient all-reduce across the devices of one process: per layer, overlapped with backward.

Each device has two in-order queues: the main one runs the step's kernels, the copy queue moves
gradients. As soon as a layer's backward kernels are enqueued, its gradients are read back on
the copy queue (waiting only for that layer's last kernel) into page-locked host buffers, so the
main queue goes straight on to earlier layers (Lee et al., HiPC 2017). The host waits for the
layers in the order backward produced them (last layer first); once every device has read a
layer, each device gets the other devices' copies uploaded on its copy queue and adds them on
its main queue. The host does no arithmetic and every transfer overlaps the remaining backward.

The sum is taken in a fixed device order, ((g0 + g1) + g2) + ..., on every device, so all
replicas get bitwise the same gradients (float addition is commutative, so devices 0 and 1
may add their own first; from device 2 on the sum is built in a staging buffer). Every shard's
loss is already divided by the global batch size, so the plain sum is the gradient of the whole
batch; the same optimizer step then runs on each replica, which keeps them identical.
"""
import pyopencl as cl

from .buffers import empty, pinned_empty
from .codegen.update import Axpby


def seconds(event, start=None):
    """Profiled duration of an event, or from `start`'s start to `event`'s end."""
    first = (start or event).profile.start
    return (event.profile.end - first) * 1e-9


class _Run:
    """One device's part of a step: its executor and its layer reads, in backward order."""

    def __init__(self, ex):
        self.ex, self.device = ex, ex.replica.device
        self.reads = []          # (name, read event, pinned host copy)
        self.last_kernel = None  # the device's last backward kernel with parameter gradients
        self.uploads = []        # upload events of this step (their timings feed the scheduler)


class GradientExchange:
    def __init__(self):
        self._host = {}     # (device index, name) -> pinned host buffer its reads land in
        self._staging = {}  # (device index, peer position, name) -> peer's copy on that device
        self._axpby = {}    # (device index, size) -> y = x + y kernel
        self.runs = []

    def begin(self):
        self.runs = []

    def reader(self, ex):
        """Callback for Executor.backward: read one node's parameter gradients back."""
        run = _Run(ex)
        self.runs.append(run)
        device = run.device

        def on_node(names):
            run.last_kernel = device.last_kernel
            for name in names:
                grad = ex.replica.grads[name]
                key = (device.index, name)
                if key not in self._host:
                    self._host[key] = pinned_empty(device, grad.shape)
                event = grad.get_async(self._host[key], wait_for=[run.last_kernel],
                                       queue=device.copy_queue)
                run.reads.append((name, event, self._host[key]))
        return on_node

    def _add(self, device, x, y, wait_for):
        key = (device.index, y.size)
        if key not in self._axpby:
            self._axpby[key] = Axpby(device, y.size)
        self._axpby[key](x, y, 1.0, 1.0, wait_for=wait_for)

    def _sum_on(self, position, name, k):
        """Enqueue, on the device at `position`, the fixed-order sum of layer k's gradients."""
        run = self.runs[position]
        device, own = run.device, run.ex.replica.grads[name]
        terms = []
        for p, peer in enumerate(self.runs):
            if p == position:
                terms.append(own)
                continue
            key = (device.index, p, name)
            if key not in self._staging:
                self._staging[key] = empty(device, own.shape)
            event = self._staging[key].set(peer.reads[k][2], wait=False,
                                           queue=device.copy_queue)
            run.uploads.append(event)
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

    def reduce(self):
        """Wait for the reads layer by layer and enqueue each layer's sum on every device.
        -> per device: (seconds from its first command to its last backward kernel,
                        seconds its copies of the gradients took)"""
        names = [name for name, _, _ in self.runs[0].reads]
        for k, name in enumerate(names):
            for run in self.runs:
                run.reads[k][1].wait()
            for position in range(len(self.runs)):
                self._sum_on(position, name, k)
        # The pinned host copies are read again next step: the uploads must be done first.
        for run in self.runs:  # (one context per device: events are waited for per device)
            if run.uploads:
                cl.wait_for_events(run.uploads)
        times = []
        for run in self.runs:
            first = run.ex.first_event
            compute = seconds(run.last_kernel, first) if first and run.last_kernel else None
            moved = sum(seconds(e) for _, e, _ in run.reads) + sum(map(seconds, run.uploads))
            times.append((compute, moved))
        return times
