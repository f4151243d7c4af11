"""Optimizers. The update runs on each device replica (kernels/update.cl.mako); the host only
holds the hyper-parameters and the step count.

An optimizer's state is BUFFERS kinds of buffers, one per parameter each, on every replica
(replica.state[kind][name]); on the host (checkpoints, hand-overs between parallel modes, MPI)
it is one flat dict keyed state_key(kind, name)."""
import math

from ..backend.buffers import empty
from ..codegen.update import AdamMulti, SGDMulti, SumSquares
from ..errors import HetclError


def state_key(kind, name):
    """The host key of the `kind` buffer of parameter `name` ("momentum:conv0.weight")."""
    return f"{kind}:{name}"


def split_key(key):
    """-> (kind, parameter name) of a host key."""
    kind, _, name = key.partition(":")
    return kind, name


class _Optimizer:
    BUFFERS = ()
    multi = None  # the kernel host that updates several tensors in one launch

    def __init__(self, max_grad_norm=None):
        """max_grad_norm: clip the gradients to this global L2 norm (PyTorch's
        clip_grad_norm_ before the step); None: no clipping."""
        if max_grad_norm is not None and not (max_grad_norm > 0 and math.isfinite(max_grad_norm)):
            raise HetclError(f"max_grad_norm must be a finite number above 0 (got "
                             f"{max_grad_norm})")
        self.max_grad_norm = None if max_grad_norm is None else float(max_grad_norm)
        self.steps = 0  # counted by Runtime.apply_update, once per step over all replicas
        self._kernels = {}

    def _kernel(self, device, sizes, build=None):
        key = (device, sizes, build)  # kernels belong to the device's context
        if key not in self._kernels:
            self._kernels[key] = (build or self._build)(device, sizes)
        return self._kernels[key]

    def sum_of_squares(self, holder):
        """The sum of squares of a replica's (or hybrid slice's) gradients; waits for them."""
        grads = [g for g in holder.grads.values() if g.size]  # (a slice may have no rows)
        n, total = SumSquares.MAX_TENSORS, 0.0
        for i in range(0, len(grads), n):
            part = grads[i:i + n]
            total += self._kernel(holder.device, tuple(g.size for g in part), SumSquares)(
                [(g.buffer,) for g in part])
        return total

    def clip_scale(self, sum_of_squares):
        """The factor clipping takes the gradients by, from their global sum of squares, as
        PyTorch's clip_grad_norm_: max_norm / (norm + 1e-6), at most 1."""
        return min(1.0, self.max_grad_norm / (math.sqrt(sum_of_squares) + 1e-6))

    def apply(self, replica, gscale=None):
        """Update one replica's parameters from its gradients, times gscale where the optimizer
        clips (clip_scale; enqueued, not waited for): one launch for up to MAX_TENSORS
        parameters (every launch costs host time, and a multi-GPU step is host-bound:
        docs/benchmarks.md, 'Several devices at once'). Buffers start at zero."""
        params = {name: replica.params[name] for name in replica.grads}  # (the trained ones)
        for kind in self.BUFFERS:
            buffers = replica.state.setdefault(kind, {})
            for name, p in params.items():
                if name not in buffers:
                    buffers[name] = empty(replica.device, p.shape).fill(0.0)
        tensors = [tuple([p, replica.grads[name]] +
                         [replica.state[kind][name] for kind in self.BUFFERS])
                   for name, p in params.items()]
        size = self.multi.MAX_TENSORS
        for i in range(0, len(tensors), size):
            part = tensors[i:i + size]
            self._launch(self._kernel(replica.device, tuple(t[0].size for t in part)),
                         [tuple(a.buffer for a in t) for t in part], gscale)


class SGD(_Optimizer):
    """PyTorch's SGD: momentum (optionally Nesterov) and L2 weight decay."""
    BUFFERS = ("momentum",)
    multi = SGDMulti

    def __init__(self, lr=0.01, momentum=0.0, weight_decay=0.0, nesterov=False,
                 max_grad_norm=None):
        super().__init__(max_grad_norm)
        if not (lr > 0 and momentum >= 0 and weight_decay >= 0):
            raise HetclError(f"SGD needs lr > 0, momentum >= 0, weight_decay >= 0; got lr={lr}, "
                             f"momentum={momentum}, weight_decay={weight_decay}")
        if nesterov and momentum == 0:
            raise HetclError("Nesterov momentum needs momentum > 0")
        self.lr, self.momentum, self.weight_decay = float(lr), float(momentum), float(weight_decay)
        self.nesterov = bool(nesterov)

    def _build(self, device, sizes):
        return SGDMulti(device, sizes, nesterov=self.nesterov,
                        clip=self.max_grad_norm is not None)

    def _launch(self, kernel, tensors, gscale):
        kernel(tensors, self.lr, self.momentum, self.weight_decay, gscale)


class Adam(_Optimizer):
    """PyTorch's Adam: L2 weight decay added to the gradient (AdamW: decoupled)."""
    BUFFERS = ("exp_avg", "exp_avg_sq")
    multi = AdamMulti
    decoupled = False

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0,
                 max_grad_norm=None):
        super().__init__(max_grad_norm)
        beta1, beta2 = (float(b) for b in betas)
        name = type(self).__name__
        if not (lr > 0 and 0 <= beta1 < 1 and 0 <= beta2 < 1 and eps > 0 and weight_decay >= 0
                and math.isfinite(lr) and math.isfinite(weight_decay)):
            raise HetclError(f"{name} needs lr > 0, betas in [0, 1), eps > 0 and weight_decay "
                             f">= 0; got lr={lr}, betas=({beta1}, {beta2}), eps={eps}, "
                             f"weight_decay={weight_decay}")
        self.lr, self.betas, self.eps = float(lr), (beta1, beta2), float(eps)
        self.weight_decay = float(weight_decay)

    def _build(self, device, sizes):
        return AdamMulti(device, sizes, decoupled=self.decoupled,
                         clip=self.max_grad_norm is not None)

    def _launch(self, kernel, tensors, gscale):
        kernel(tensors, self.lr, *self.betas, self.eps, self.weight_decay, self.steps + 1, gscale)


class AdamW(Adam):
    """PyTorch's AdamW: weight decay applied to the parameters, apart from the gradient."""
    decoupled = True

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2,
                 max_grad_norm=None):
        super().__init__(lr, betas, eps, weight_decay, max_grad_norm)


OPTIMIZERS = {"sgd": SGD, "adam": Adam, "adamw": AdamW}


SCHEDULES = ("constant", "step", "cosine")


def scheduled_lr(schedule, base_lr, epoch, step, steps_per_epoch, epochs, warmup_epochs=0.0):
    """Learning rate for a step. step: x0.1 at 50% and again at 75% of the epochs; cosine:
    base_lr * (1 + cos(pi * t)) / 2 over all steps, t in [0, 1). warmup_epochs: a linear ramp
    from ~0 to that rate over the first epochs (lets a high rate start without killing ReLUs)."""
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
