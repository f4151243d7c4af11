"""Optimizers. The update runs on each device replica (kernels/update.cl.mako); the host only
holds the hyper-parameters and the step count."""
from ..backend.buffers import empty
from ..codegen.update import SGDMulti
from ..errors import HetclError


class SGD:
    """PyTorch's SGD: momentum (optionally Nesterov) and L2 weight decay."""

    def __init__(self, lr=0.01, momentum=0.0, weight_decay=0.0, nesterov=False):
        if lr <= 0 or momentum < 0 or weight_decay < 0:
            raise HetclError(f"SGD needs lr > 0, momentum >= 0, weight_decay >= 0; got lr={lr}, "
                             f"momentum={momentum}, weight_decay={weight_decay}")
        if nesterov and momentum == 0:
            raise HetclError("Nesterov momentum needs momentum > 0")
        self.lr, self.momentum, self.weight_decay = float(lr), float(momentum), float(weight_decay)
        self.nesterov = bool(nesterov)
        self.steps = 0  # counted by Runtime.train_step, once per step over all replicas
        self._kernels = {}

    def _kernel(self, device, sizes):
        key = (device, sizes)  # kernels belong to the device's context
        if key not in self._kernels:
            self._kernels[key] = SGDMulti(device, sizes, nesterov=self.nesterov)
        return self._kernels[key]

    def apply(self, replica):
        """Update one replica's parameters from its gradients (enqueued, not waited for): one
        launch for up to SGDMulti.MAX_TENSORS parameters (every launch costs host time, and a
        multi-GPU step is host-bound: docs/benchmarks.md, 'Several devices at once')."""
        momentum = replica.state.setdefault("momentum", {})
        tensors = []
        for name, p in replica.params.items():
            if name not in momentum:
                momentum[name] = empty(replica.device, p.shape).fill(0.0)
            tensors.append((p, replica.grads[name], momentum[name]))
        for i in range(0, len(tensors), SGDMulti.MAX_TENSORS):
            part = tensors[i:i + SGDMulti.MAX_TENSORS]
            self._kernel(replica.device, tuple(p.size for p, _, _ in part))(
                [tuple(t.buffer for t in triple) for triple in part], self.lr, self.momentum,
                self.weight_decay)


SCHEDULES = ("constant", "step", "cosine")


def scheduled_lr(schedule, base_lr, epoch, step, steps_per_epoch, epochs, warmup_epochs=0.0):
    """Learning rate for a step. step: x0.1 at 50% and again at 75% of the epochs; cosine:
    base_lr * (1 + cos(pi * t)) / 2 over all steps, t in [0, 1). warmup_epochs: a linear ramp
    from ~0 to that rate over the first epochs (lets a high rate start without killing ReLUs)."""
    import math
    done = epoch * steps_per_epoch + step
    if warmup_epochs > 0 and done < warmup_epochs * steps_per_epoch:
        ramp = (done + 1) / (warmup_epochs * steps_per_epoch)
        return ramp * scheduled_lr(schedule, base_lr, epoch, step, steps_per_epoch, epochs)
    if schedule == "constant":
        return base_lr
    if schedule == "step":
        return base_lr * (0.1 ** sum(epoch >= m for m in (epochs * 0.5, epochs * 0.75)))
    if schedule == "cosine":
        t = (epoch * steps_per_epoch + step) / max(1, epochs * steps_per_epoch)
        return base_lr * 0.5 * (1 + math.cos(math.pi * t))
    raise HetclError(f"unknown learning-rate schedule {schedule!r}: use one of "
                     f"{', '.join(SCHEDULES)}")
