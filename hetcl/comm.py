"""Gradient all-reduce across the devices of one process: host-staged, per layer, overlapped.

While a device runs its backward pass, each layer's parameter gradients are read back with a
non-blocking copy as soon as that layer's backward kernels are enqueued (last layer first, the
order backward produces them). The host then waits for the layers in that same order and sums
each across devices while the devices go on computing earlier layers (Lee et al., HiPC 2017).
Sums are float32, in place, in a fixed device order, so the result does not depend on which
device finished first (float64 cost 3x the time for 2.6M parameters and changed nothing the
tests can see at 1e-5); every shard's loss is already divided by the global batch size, so the plain
sum is the gradient of the whole batch. The sum is uploaded to every replica, and the same
optimizer step then runs on each, which keeps the replicas identical.
"""
import numpy as np

from .buffers import pinned_empty


def seconds(event, start=None):
    """Profiled duration of an event, or from `start`'s start to `event`'s end."""
    first = (start or event).profile.start
    return (event.profile.end - first) * 1e-9


class GradientExchange:
    def __init__(self):
        self._host = {}     # (device index, name) -> host buffer the reads land in
        self._sums = {}     # keeps uploaded host arrays alive until the next step
        self.pending = []   # per device: (executor, [(name, event, host buffer)] in read order)

    def begin(self):
        self.pending = []

    def reader(self, ex):
        """Callback for Executor.backward: enqueue reads of one node's parameter gradients."""
        reads = []
        self.pending.append((ex, reads))
        device = ex.replica.device

        def on_node(names):
            for name in names:
                grad = ex.replica.grads[name]
                key = (device.index, name)
                if key not in self._host:
                    self._host[key] = pinned_empty(device, grad.shape)
                reads.append((name, grad.get_async(self._host[key]), self._host[key]))
        return on_node

    def reduce(self):
        """Wait for the reads layer by layer, sum, upload the sums to every replica.
        -> per device: (seconds from its first command to its last read, seconds reading)"""
        names = [name for name, _, _ in self.pending[0][1]]
        for k, name in enumerate(names):
            # Every device's read of this layer first: it comes after that device's upload of
            # the previous step's sum in its queue, so the sum buffer is free to overwrite.
            for _, reads in self.pending:
                reads[k][1].wait()
            total = None
            for _, reads in self.pending:  # fixed device order
                buf = reads[k][2]
                if total is None:
                    total = self._sums.get(name)
                    if total is None or total.shape != buf.shape:
                        total = self._sums[name] = pinned_empty(
                            self.pending[0][0].replica.device, buf.shape)
                    np.copyto(total, buf)
                else:
                    np.add(total, buf, out=total)  # in place: no allocation per step
        for ex, _ in self.pending:
            for name in names:
                ex.replica.grads[name].set(self._sums[name], wait=False)
        times = []
        for ex, reads in self.pending:
            last = reads[-1][1] if reads else None
            compute = seconds(last, ex.first_event) if last is not None and ex.first_event \
                else None
            times.append((compute, sum(seconds(e) for _, e, _ in reads)))
        return times
