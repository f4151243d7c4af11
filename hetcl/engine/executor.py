"""One model on one device, running (replica.py holds its parameters and resident data):

Executor - the bound ops and activation/gradient buffers for one batch size on one device;
           it enqueues a step's forward, loss and backward and never waits, except for the
           small read of the per-row loss and accuracy results.
StepResult - a step's (loss, correct count) over its devices' executors, read when asked.
"""
import dataclasses

import numpy as np
import pyopencl as cl

from ..backend.buffers import empty
from ..codegen.gather import Gather
from ..codegen.loss import SigmoidBCE, SoftmaxCE
from ..codegen.update import Axpby
from ..errors import HetclError

_LOSS_OPS = {"softmax_ce": SoftmaxCE, "sigmoid_bce": SigmoidBCE}


@dataclasses.dataclass
class StepContext:
    """What the layers that depend on the step (batch norm, dropout) need of one device's part
    of a training step, beyond their inputs."""
    global_n: int        # samples in the whole batch, over every device and rank
    offset: int = 0      # the index of this device's first sample in the whole batch
    step: int = 0        # optimizer steps taken before this one (dropout's counter)
    seed: int = 0        # the run's seed (dropout's key)
    sums: object = None  # the step's BatchSums across devices and ranks; None: one device
    position: int = 0    # this device's place in the step's fixed order of sums


class Executor:
    def __init__(self, replica, n, upto=None):
        """upto: run only the nodes before this index (hybrid.py: the part of the model before
        its dense layers); its loss op still takes the model's output shape."""
        model, device = replica.model, replica.device
        self.replica, self.n, self.nodes = replica, n, model.nodes
        nodes = model.nodes[:upto]
        self.upto = len(nodes)
        out, grad = {0: empty(device, (n,) + nodes[0].shape)}, {}
        self.ops = {}
        for node in nodes[1:]:  # forward buffers; aliases share their producer's memory
            src = nodes[node.inputs[0]]
            if node.fused_into is not None or getattr(node.layer, "alias", False):
                out[node.index] = out[src.index].view((n,) + node.shape)
            else:
                out[node.index] = empty(device, (n,) + node.shape)
                self.ops[node.index] = node.layer.bind(device, n, act=node.act)
        for node in reversed(nodes[1:]):  # gradient buffers, outputs first
            if node.index not in grad:
                grad[node.index] = empty(device, (n,) + node.shape)
            src = nodes[node.inputs[0]]
            if ((node.fused_into is not None or getattr(node.layer, "alias", False))
                    and src.index != 0 and src.consumers[-1] == node.index):
                grad[src.index] = grad[node.index].view((n,) + src.shape)
        self.out, self.grad = out, grad
        # A node's output needs a gradient only if something trainable lies at or before it
        # (e.g. not a Flatten right after the input: no dx for the first Dense).
        self.needs_grad = {0: False}
        for node in nodes[1:]:
            self.needs_grad[node.index] = bool(node.layer.param_shapes()) or any(
                self.needs_grad[i] for i in node.inputs)
        self.scratch = {}  # extra dx buffers where a node feeds several consumers
        self.loss_op = _LOSS_OPS[model.loss](device, n, model.nodes[model.output_node].shape[0])
        self.labels = empty(device, (n,), np.int32)
        self.row_loss = empty(device, (n,))
        self.row_correct = empty(device, (n,), np.int32)
        self.indices = empty(device, (n,), np.int32)
        self.steps = 0  # enqueue_step calls: the first one includes building the kernels
        self._gathers = {}  # (id(data set), pad, flip) -> Gather
        self._param_views = {}  # (node index, id of params/grads dict) -> (views, dict)
        self._axpby = {}  # size -> Axpby, built on first use (see _axpby_for)

    def _axpby_for(self, size):
        """The Axpby kernel for `size` floats, built once: building one per use would create
        a kernel object (and look up the tuning DB) in every step."""
        op = self._axpby.get(size)
        if op is None:
            op = self._axpby[size] = Axpby(self.replica.device, size)
        return op

    def _node_params(self, node, table):
        """{short name: array} of a node's entries in a replica's params or grads; built once
        (the replica's dicts keep their arrays for life) - it runs for every node of every step."""
        key = (node.index, id(table))
        if key not in self._param_views:
            layer = node.layer
            names = (f"{layer.name}.{k}" for k in (*layer.param_shapes(), *layer.running_shapes()))
            self._param_views[key] = ({name.rsplit(".", 1)[1]: table[name] for name in names
                                       if name in table}, table)  # (grads: no running stats)
        return self._param_views[key][0]

    def set_input(self, x, labels=None):
        self._host_x = np.ascontiguousarray(x, np.float32).reshape(self.out[0].shape)
        # Non-blocking: the host copy lives until the next step.
        device = self.replica.device  # (retire: dropping the events would wait for them)
        device.retire(self.out[0].set(self._host_x, wait=False))
        if labels is not None:
            self._host_labels = np.ascontiguousarray(labels, np.int32)
            device.retire(self.labels.set(self._host_labels, wait=False))

    def gather(self, data, indices, augment=None):
        """Input and labels from a data set on the device (device_data.py: resident or
        streamed): only the step's indices travel, or for a streamed set its rows too.
        indices: a copy is taken (an upload may be pending when the caller reuses them)."""
        host_idx = np.array(indices, np.int32)
        images, labels, rows, keys, wait_for, first = data.rows(self, host_idx)
        pad, flip = (augment.pad, augment.flip) if augment else (0, False)
        key = (id(data), pad, flip)
        if key not in self._gathers:
            self._gathers[key] = Gather(self.replica.device, self.n, data.sample_shape,
                                        data.mean, data.std, pad=pad, flip=flip,
                                        label_type=data.label_type)
        event = self._gathers[key](images, labels, rows, self.out[0], self.labels,
                                   count=len(host_idx), keys=keys,
                                   seed=augment.seed if augment else 0,
                                   epoch=augment.epoch if augment else 0, wait_for=wait_for,
                                   first=first)
        data.read_by(self, event)

    def upload_indices(self, host_idx):
        """The step's int32 data-set indices on the device (non-blocking); returns the array."""
        self._host_idx = host_idx  # kept: the upload may still be pending after the call
        self.replica.device.retire(self.indices.set(host_idx, wait=False))
        return self.indices

    def forward(self, x=None):
        """The forward pass in evaluation mode (batch norm's running statistics, no dropout)."""
        if x is not None:
            self.set_input(x)
        for _ in self.forward_nodes():
            pass
        return self.out[self.replica.model.output_node]

    def forward_nodes(self, step=None):
        """The forward pass as a generator, one node enqueued per next() (see enqueue_step).
        step: the StepContext of a training step, None for evaluation."""
        for index, op in self.ops.items():
            node = self.nodes[index]
            args = ([self.out[i] for i in node.inputs], self.out[index],
                    self._node_params(node, self.replica.params))
            if node.layer.takes_step:
                yield from self._all_reduced(op.forward(*args, step), step, ("fwd", index))
            else:
                op.forward(*args)
            yield

    @staticmethod
    def _all_reduced(sums, step, key):
        """Drive a step-taking op's forward/backward: each array of per-channel sums it yields
        is summed across the step's devices (step.sums) before it goes on."""
        for part, array in enumerate(sums):
            yield from step.sums.all_reduce(key + (part,), step.position, array)

    def begin_step(self):
        """Count a step (the scheduler leaves an executor's first step unmeasured: it built
        the kernels)."""
        self.steps += 1

    def enqueue_step(self, global_n, on_node=None, step=None):
        """Forward, loss and backward as a generator that enqueues one node per next() call:
        a runtime driving several devices takes turns between them, so that every device gets
        work from the start instead of waiting for the host to enqueue the others' whole step.
        step: its StepContext (default: this device alone holds the whole batch, step 0).
        Its return value (StopIteration.value) is what loss() returned."""
        step = step or StepContext(global_n, seed=self.replica.model.seed or 0)
        self.begin_step()
        yield from self.forward_nodes(step)
        done = self.loss(global_n)
        yield
        yield from self.backward_nodes(on_node, step)
        return done

    def loss(self, global_n, logits=None, dlogits=None):
        """Loss, gradient of the logits and per-row results for the labels on the device, read
        back without waiting. logits/dlogits: buffers other than the model output's
        (hybrid.py). -> what results() takes (the read's event and where it lands)."""
        out = self.replica.model.output_node
        self.loss_op(logits or self.out[out], self.labels, dlogits or self.grad[out],
                     self.row_loss, self.row_correct, float(global_n))
        # fresh host arrays each step (n numbers): a step's results stay intact however late
        # they are read (Runtime, defer=True)
        host_loss, host_correct = np.empty(self.n, np.float32), np.empty(self.n, np.int32)
        # (in order: done when the second read is; retired, since dropping it would wait)
        self.replica.device.retire(self.row_loss.get_async(host_loss))
        return self.row_correct.get_async(host_correct), host_loss, host_correct

    def backward_nodes(self, on_node, step):
        """The backward pass as a generator, last node first. on_node(parameter names) is
        called as soon as a node's gradients are enqueued (the all-reduce reads them back from
        there). step: the StepContext the forward pass had."""
        for node in reversed(self.nodes[1:self.upto]):
            aliased = node.fused_into is not None or getattr(node.layer, "alias", False)
            dxs, adds = [], []
            for i in node.inputs:
                src = self.nodes[i]
                if not self.needs_grad[i]:
                    dxs.append(None)
                elif src.consumers[-1] == node.index:
                    dxs.append(self.grad[i])  # last consumer writes, the others add to it
                else:
                    key = (node.index, i)
                    if key not in self.scratch:
                        self.scratch[key] = empty(self.replica.device, self.grad[i].shape)
                    dxs.append(self.scratch[key])
                    adds.append((self.scratch[key], self.grad[i]))
            if aliased:
                for (scratch, target) in adds:  # an alias that is not the last consumer
                    self._axpby_for(target.size)(self.grad[node.index].view(target.shape),
                                                 target, 1.0, 1.0)
                yield
                continue
            args = ([self.out[i] for i in node.inputs], self.out[node.index],
                    self.grad[node.index], dxs, self._node_params(node, self.replica.params),
                    self._node_params(node, self.replica.grads))
            if node.layer.takes_step:
                yield from self._all_reduced(self.ops[node.index].backward(*args, step), step,
                                             ("bwd", node.index))
            else:
                self.ops[node.index].backward(*args)
            for scratch, target in adds:
                self._axpby_for(target.size)(scratch, target, 1.0, 1.0)
            if on_node is not None and node.layer.param_shapes():
                on_node([f"{node.layer.name}.{k}" for k in node.layer.param_shapes()])
            yield

    @staticmethod
    def results(done):
        """(loss, correct count) of a step, from what loss() returned: waits for the read."""
        event, host_loss, host_correct = done
        event.wait()
        return float(host_loss.astype(np.float64).sum()), int(host_correct.sum())


def interleave(steps, on_turn=None):
    """Advance the generators (Executor.enqueue_step and its parts) one item each in turn until
    all are done, so that every device gets work from the start instead of waiting for the
    host to enqueue the others' whole step. -> their return values, in order. on_turn(i) is
    called before generator i advances (the runtime notes whose device an error came from)."""
    results, pending = [None] * len(steps), list(range(len(steps)))
    while pending:
        for i in list(pending):
            if on_turn is not None:
                on_turn(i)
            try:
                next(steps[i])
            except StopIteration as finished:
                results[i] = finished.value
                pending.remove(i)
    return results


class StepResult:
    """A training step's (loss, correct count). get() waits for the devices' reads of their
    per-row results, once; a step enqueued with defer=True returns this before they are done.
    An OpenCL error that only shows then (the step's update is already enqueued) cannot be
    redone on the other devices: it stops training with a one-line error instead."""

    def __init__(self, pending=(), value=None):
        self._pending, self._value = list(pending), value  # [(device, loss() result)]

    def get(self):
        if self._value is None:
            loss = correct = 0
            for device, done in self._pending:
                try:
                    l, c = Executor.results(done)
                except cl.Error as e:
                    raise HetclError(f"{device} failed after its step was enqueued ({e}); "
                                     f"resume from the last checkpoint") from e
                loss, correct = loss + l, correct + c
            self._value, self._pending = (loss, correct), []
        return self._value
