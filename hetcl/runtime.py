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

from .buffers import empty, to_device
from .codegen.gather import Gather
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


class Resident:
    """A uint8 data set on one device: images [N, sample_size], labels [N]."""

    def __init__(self, device, images, labels, mean, std):
        self.sample_size = int(np.prod(images.shape[1:]))
        self.images = to_device(device, np.ascontiguousarray(images, np.uint8).reshape(
            len(images), self.sample_size))
        self.labels = to_device(device, np.ascontiguousarray(labels, np.uint8))
        self.mean, self.std = float(mean), float(std)


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
        self.indices = empty(device, (n,), np.int32)
        self._gathers = {}  # per resident data set: its normalisation is baked into the kernel
        self._host_loss = np.empty(n, np.float32)
        self._host_correct = np.empty(n, np.int32)
        from .codegen.update import Axpby
        self._axpby = {}
        self._axpby_for = lambda size: self._axpby.setdefault(size, Axpby(device, size))

    def _node_params(self, node, table):
        layer = node.layer
        return {k: table[f"{layer.name}.{k}"] for k in layer.param_shapes()}

    def set_input(self, x, labels=None):
        self._host_x = np.ascontiguousarray(x, np.float32).reshape(self.out[0].shape)
        self.out[0].set(self._host_x, wait=False)  # the host copy lives until the next step
        if labels is not None:
            self._host_labels = np.ascontiguousarray(labels, np.int32)
            self.labels.set(self._host_labels, wait=False)

    def gather(self, resident, indices):
        """Input and labels from a data set resident on the device: only indices travel."""
        self._host_idx = np.ascontiguousarray(indices, np.int32)
        self.indices.set(self._host_idx, wait=False)
        key = id(resident)
        if key not in self._gathers:
            self._gathers[key] = Gather(self.replica.device, self.n, resident.sample_size,
                                        resident.mean, resident.std)
        self._gathers[key](resident.images, resident.labels, self.indices, self.out[0],
                           self.labels)

    def forward(self, x=None):
        if x is not None:
            self.set_input(x)
        for index, op in self.ops.items():
            node = self.nodes[index]
            op.forward([self.out[i] for i in node.inputs], self.out[index],
                        self._node_params(node, self.replica.params))
        return self.out[self.replica.model.output_node]

    def loss(self, global_n):
        """Loss, gradient of the logits and per-row results for the labels on the device;
        returns the event of the (non-blocking) read of the results."""
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
        self._replicas, self._executors, self._resident = {}, {}, {}

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

    def _step(self, model, n, feed):
        """One forward/loss/backward of n samples over the devices; feed(executor, a, b) puts
        samples a..b on the executor's device."""
        runs = []
        for device, a, b in self.shards(n):
            ex = self.executor(model, device, b - a)
            feed(ex, a, b)
            ex.forward()
            done = ex.loss(n)
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

    def _numpy_step(self, model, x, y):
        x = self._prepare(model, x, y)
        y = np.asarray(y)
        return self._step(model, len(x), lambda ex, a, b: ex.set_input(x[a:b], y[a:b]))

    def gradients(self, model, x, y):
        """(loss, {name: gradient}) of the batch, without changing the parameters."""
        loss, _, replicas = self._numpy_step(model, x, y)
        return loss, {k: v.get() for k, v in replicas[0].grads.items()}

    def train_step(self, model, opt, x, y, return_correct=False):
        """One SGD step on a numpy batch (x already normalised). -> loss [, correct count]"""
        return self._update(model, opt, *self._numpy_step(model, x, y), return_correct)

    def resident(self, device, images, labels, mean=0.0, std=1.0):
        """uint8 images [N, ...] and labels [N] uploaded once to the device (cached)."""
        key = (device.index, id(images), id(labels))
        if key not in self._resident:
            self._resident[key] = Resident(device, images, labels, mean, std)
        return self._resident[key]

    def train_step_indices(self, model, opt, images, labels, indices, mean=0.0, std=1.0,
                           return_correct=False):
        """One SGD step on samples `indices` of a uint8 data set kept on every device; the
        kernels normalise (x/255 - mean)/std while gathering."""
        model.build(images.shape[1:])
        indices = np.asarray(indices, np.int32)
        feed = lambda ex, a, b: ex.gather(
            self.resident(ex.replica.device, images, labels, mean, std), indices[a:b])
        return self._update(model, opt, *self._step(model, len(indices), feed), return_correct)

    def evaluate_indices(self, model, images, labels, mean=0.0, std=1.0, batch_size=256):
        """-> predicted class per sample of a resident uint8 set (on the first device)."""
        model.build(images.shape[1:])
        device = self.devices[0]
        data = self.resident(device, images, labels, mean, std)
        n = min(batch_size, len(images))
        ex = self.executor(model, device, n)
        preds = []
        for start in range(0, len(images), n):
            idx = np.arange(start, start + n, dtype=np.int32)
            idx[idx >= len(images)] = len(images) - 1  # pad the last batch with a repeat
            ex.gather(data, idx)
            preds.append(ex.forward().get().argmax(axis=1)[:len(images) - start])
        return np.concatenate(preds)

    def optimizer_state(self, model):
        """Optimizer buffers of the model (identical on every replica): {name: array}."""
        for (mid, _), rep in self._replicas.items():
            if mid == id(model):
                return {k: v.get() for k, v in rep.state.get("momentum", {}).items()}
        return {}

    def load_optimizer_state(self, model, state):
        for device in self.devices:
            rep = self.replica(model, device)
            rep.state["momentum"] = {k: to_device(device, np.asarray(v, np.float32))
                                     for k, v in state.items()}

    def _update(self, model, opt, loss, correct, replicas, return_correct):
        for rep in replicas:
            opt.apply(rep)
        opt.steps += 1
        model.version += 1
        for rep in replicas:
            rep.version = model.version
        model._pull = replicas[0].download
        return (loss, correct) if return_correct else loss
