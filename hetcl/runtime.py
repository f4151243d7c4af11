"""Run a Graph on devices: parameter replicas, per-batch-size executors, and the step.

Replica  - one model's parameters, gradients and optimizer state on one device.
Executor - the bound ops and activation/gradient buffers for one batch size on one device.
Runtime  - forward / gradients / train_step over the selected devices. With several devices the
           batch is split into contiguous shards; every shard's loss and gradients are already
           divided by the global batch size, so the host sums the shards' gradients (in float64,
           in device order, so the result does not depend on timing) and the same update runs on
           every replica, which therefore stay identical.
"""
import numpy as np

from .buffers import empty
from .codegen.loss import SigmoidBCE, SoftmaxCE
from .device import select_devices
from .errors import ShapeError

_LOSS_OPS = {"softmax_ce": SoftmaxCE, "sigmoid_bce": SigmoidBCE}


class Replica:
    def __init__(self, model, device):
        self.model, self.device = model, device
        host = model.parameters()
        self.params = {k: empty(device, v.shape) for k, v in host.items()}
        self.grads = {k: empty(device, v.shape) for k, v in host.items()}
        self.state = {}  # optimizer buffers, e.g. {"momentum": {name: DeviceArray}}
        self.version = None
        self.sync(host)

    def sync(self, host=None):
        """Upload the host parameters if they changed since this replica last saw them."""
        if self.version == self.model.version:
            return
        host = host if host is not None else self.model.parameters()
        for k, v in host.items():
            self.params[k].set(v)
        self.version = self.model.version

    def download(self):
        return {k: v.get() for k, v in self.params.items()}


class Executor:
    def __init__(self, replica, n):
        model, device = replica.model, replica.device
        self.replica, self.n, self.nodes = replica, n, model.nodes
        nodes = model.nodes
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
        self.scratch = {}  # extra dx buffers where a node feeds several consumers
        self.loss_op = _LOSS_OPS[model.loss](device, n, nodes[model.output_node].shape[0])
        self.labels = empty(device, (n,), np.int32)
        self.row_loss = empty(device, (n,))
        self.row_correct = empty(device, (n,), np.int32)
        self._host_loss = np.empty(n, np.float32)
        self._host_correct = np.empty(n, np.int32)
        from .codegen.update import Axpby
        self._axpby = {}
        self._axpby_for = lambda size: self._axpby.setdefault(size, Axpby(device, size))

    def _node_params(self, node, table):
        layer = node.layer
        return {k: table[f"{layer.name}.{k}"] for k in layer.param_shapes()}

    def forward(self, x):
        self.out[0].set(np.asarray(x, np.float32).reshape(self.out[0].shape), wait=False)
        for index, op in self.ops.items():
            node = self.nodes[index]
            op.forward([self.out[i] for i in node.inputs], self.out[index],
                        self._node_params(node, self.replica.params))
        return self.out[self.replica.model.output_node]

    def loss(self, labels, global_n):
        self.labels.set(np.asarray(labels, np.int32), wait=False)
        out = self.replica.model.output_node
        self.loss_op(self.out[out], self.labels, self.grad[out], self.row_loss,
                     self.row_correct, float(global_n))
        self.row_loss.get_async(self._host_loss)
        return self.row_correct.get_async(self._host_correct)

    def backward(self):
        for node in reversed(self.nodes[1:]):
            aliased = node.fused_into is not None or getattr(node.layer, "alias", False)
            dxs, adds = [], []
            for i in node.inputs:
                src = self.nodes[i]
                if i == 0:
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
                continue
            self.ops[node.index].backward(
                [self.out[i] for i in node.inputs], self.out[node.index],
                self.grad[node.index], dxs, self._node_params(node, self.replica.params),
                self._node_params(node, self.replica.grads))
            for scratch, target in adds:
                self._axpby_for(target.size)(scratch, target, 1.0, 1.0)

    def results(self, event):
        event.wait()
        return float(self._host_loss.astype(np.float64).sum()), int(self._host_correct.sum())


class Runtime:
    def __init__(self, devices="all"):
        self.devices = select_devices(devices)
        self._replicas, self._executors = {}, {}

    def replica(self, model, device):
        key = (id(model), device.index)
        if key not in self._replicas:
            self._replicas[key] = Replica(model, device)
        rep = self._replicas[key]
        rep.sync()
        return rep

    def executor(self, model, device, n):
        key = (id(model), device.index, n)
        if key not in self._executors:
            self._executors[key] = Executor(self.replica(model, device), n)
        self._executors[key].replica.sync()
        return self._executors[key]

    def _prepare(self, model, x, y=None):
        x = np.asarray(x, np.float32)
        model.build(x.shape[1:])
        if y is not None and len(y) != len(x):
            raise ShapeError(f"{len(x)} samples but {len(y)} labels")
        return x

    def shards(self, n):
        """Contiguous (start, stop) per device; equal split for now."""
        k = min(len(self.devices), n)
        bounds = [n * i // k for i in range(k + 1)]
        return list(zip(self.devices[:k], bounds[:-1], bounds[1:]))

    def forward(self, model, x, batch_size=256):
        """Logits for x (numpy in, numpy out), in batches on the first device."""
        x = self._prepare(model, x)
        device = self.devices[0]
        n = min(batch_size, len(x))
        ex = self.executor(model, device, n)
        outs = []
        for start in range(0, len(x), n):
            chunk = x[start:start + n]
            if len(chunk) < n:  # pad the last batch: no new kernels for one odd size
                chunk = np.concatenate([chunk, np.zeros((n - len(chunk),) + chunk.shape[1:],
                                                        np.float32)])
            outs.append(ex.forward(chunk).get()[:len(x) - start])
        return np.concatenate(outs)

    def _step(self, model, x, y):
        x = self._prepare(model, x, y)
        y = np.asarray(y)
        runs = []
        for device, a, b in self.shards(len(x)):
            ex = self.executor(model, device, b - a)
            ex.forward(x[a:b])
            done = ex.loss(y[a:b], len(x))
            ex.backward()
            runs.append((ex, done))
        loss = correct = 0
        for ex, done in runs:
            l, c = ex.results(done)
            loss, correct = loss + l, correct + c
        if len(runs) > 1:
            self._all_reduce([ex.replica for ex, _ in runs])
        return loss, correct, [ex.replica for ex, _ in runs]

    @staticmethod
    def _all_reduce(replicas):
        for name in replicas[0].grads:
            total = sum(r.grads[name].get().astype(np.float64) for r in replicas)
            for r in replicas:
                r.grads[name].set(total.astype(np.float32), wait=False)

    def gradients(self, model, x, y):
        """(loss, {name: gradient}) of the batch, without changing the parameters."""
        loss, _, replicas = self._step(model, x, y)
        return loss, {k: v.get() for k, v in replicas[0].grads.items()}

    def train_step(self, model, opt, x, y, return_correct=False):
        loss, correct, replicas = self._step(model, x, y)
        for rep in replicas:
            opt.apply(rep)
        opt.steps += 1
        model.version += 1
        for rep in replicas:
            rep.version = model.version
        model._pull = replicas[0].download
        return (loss, correct) if return_correct else loss
