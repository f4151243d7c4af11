"""Hybrid parallelism (Krizhevsky's "one weird trick", 2014; Lee et al., HiPC 2017, Algorithm 1):
the layers before the model's dense tail run data-parallel, the dense tail model-parallel.

Convolutions have much compute and few weights; dense layers the reverse. So each device runs
the convolutional head on its shard of the batch (gradients all-reduced per layer, comm.py),
while each dense layer's output neurons are split across the devices in the same proportions
as the batch: device d holds rows off_d .. off_d + o_d of every dense weight (its slice) and
computes them for the *whole* batch. Per step, through the host (B = global batch, F_l = input
width and O_l = output width of dense layer l, L dense layers, N devices):

  forward   X_0 [B, F_0]: each device's head output rows, gathered and uploaded to all
            Y_l [B, O_l]: each device's column slice, gathered; uploaded to all as X_{l+1}
            logits rows a_d..b_d go back to device d, whose loss kernel turns them into dZ
  backward  dZ rows gathered; device d gets its columns of dY_l, computes its slice's weight
            gradient over the whole batch (never exchanged) and a partial input gradient
            dX_l [B, F_l]; the host sums the partials in device order (fixed: replicas stay
            bitwise identical) and hands on the columns (l > 0) or device d's rows (l = 0)

hybrid_plan.py: the dense tail, the column split, the bytes each mode moves; hybrid_transfers.py:
the step's buffers. `auto` times both modes (data parallelism's transfers overlap the backward).
"""
import numpy as np

from ..backend.buffers import empty, to_device
from ..backend.device import event_seconds
from ..engine.executor import Executor, interleave
from ..engine.ops import DenseOp
from ..engine.replica import Replica, state_on_device, state_on_host
from ..errors import HetclError
from ..log import logger
from ..model.optim import split_key, state_key
from .hybrid_plan import columns, dense_tail
from .hybrid_transfers import Transfers


class _Slice:
    """One device's rows of every dense layer's parameters, with gradients and optimizer
    state: what an optimizer's apply needs of a replica."""

    def __init__(self, device, host):
        self.device, self.version = device, None
        self.params = {k: to_device(device, v) for k, v in host.items()}
        self.grads = {k: empty(device, v.shape) for k, v in host.items()}
        self.state = {}


class Hybrid:
    """The hybrid step of one model on a runtime's devices (see the module docstring)."""

    @staticmethod
    def supports(model):
        return bool(dense_tail(model))

    def __init__(self, runtime, model):
        self.rt, self.model = runtime, model
        self.tail = dense_tail(model)
        if not self.tail:
            raise HetclError("--parallel hybrid needs a model that ends in dense layers with a "
                             "layer before them (e.g. Flatten); use --parallel data")
        self.upto = self.tail[0].index
        self.tail_names = [f"{node.layer.name}.{k}" for node in self.tail
                           for k in ("weight", "bias")]
        self.head_names = [k for k in model.parameters() if k not in self.tail_names]
        self.widths = [node.layer.in_features for node in self.tail] + \
            [self.tail[-1].layer.out_features]
        self.heads, self.slices, self.executors, self.ops = {}, {}, {}, {}
        self.cols, self.version = None, None
        self.io = Transfers(runtime.devices)  # buffers, and the bytes the last step moved
        self.last_positions = []  # devices that took part in it

    # --- parameters ----------------------------------------------------------------------------
    def _offsets(self, layer):
        cols = self.cols[layer]
        return [sum(cols[:d]) for d in range(len(cols))]

    def _distribute(self, host, state=None):
        """(Re)build every device's head replica and dense slices from full host arrays."""
        self.slices = {}
        for pos, device in enumerate(self.rt.devices):
            if pos not in self.heads:
                self.heads[pos] = Replica(self.model, device, self.head_names)
            self.heads[pos].sync(host)
            if state is not None:
                self.heads[pos].state = state_on_device(device, state, self.head_names)
            part, rows = {}, {}
            for layer, node in enumerate(self.tail):
                start, count = self._offsets(layer)[pos], self.cols[layer][pos]
                for k in ("weight", "bias"):
                    name = f"{node.layer.name}.{k}"
                    part[name] = host[name][start:start + count]
                    rows[name] = slice(start, start + count)
            self.slices[pos] = _Slice(device, part)
            if state is not None:
                self.slices[pos].state = state_on_device(
                    device, {key: value[rows[split_key(key)[1]]] for key, value in state.items()
                             if split_key(key)[1] in rows})
            self.heads[pos].version = self.slices[pos].version = self.model.version
        self.version = self.model.version

    def download(self):
        """The model's parameters assembled from the devices (head from the first one)."""
        first = self.fresh_head()
        out = first.download()
        out.update(self._gather_tail(lambda s: s.params))
        return out

    def fresh_head(self):
        """A head replica that took part in the last step (a device the scheduler left out
        has an old one)."""
        return self.heads[self.last_positions[0] if self.last_positions else min(self.heads)]

    def gradients(self):
        """The last step's gradients, assembled like download()."""
        out = {k: v.get() for k, v in self.fresh_head().grads.items()}
        out.update(self._gather_tail(lambda s: s.grads))
        return out

    def _gather_tail(self, table):
        out = {}
        for name in self.tail_names:
            parts = [table(self.slices[p])[name] for p in sorted(self.slices)
                     if name in table(self.slices[p])]
            out[name] = np.concatenate([p.get() for p in parts])
        return out

    def optimizer_state(self):
        state = state_on_host(self.fresh_head().state)
        kinds = [set(s.state) for s in self.slices.values()]
        for kind in set.intersection(*kinds) if kinds else ():
            tail = self._gather_tail(lambda s: s.state[kind])
            state.update({state_key(kind, name): value for name, value in tail.items()})
        return state

    def load_optimizer_state(self, state):
        self._distribute(self.model.parameters(), state)

    def _prepare(self, plan):
        """Column split from this step's batch split; re-slice (through the host, optimizer
        state included) when it or the host parameters changed."""
        shards = [0] * len(self.rt.devices)
        for i, a, b in plan:
            shards[i] = b - a
        cols = [columns(width, shards) for width in self.widths[1:]]
        if cols == self.cols and self.version == self.model.version:
            return
        if self.cols is not None and self.version == self.model.version:
            host, state = self.download(), self.optimizer_state()
        else:  # first step, or new host parameters (a checkpoint): the state as it was
            host = self.model.parameters()
            state = self.optimizer_state() if self.cols is not None else \
                self.rt.data_optimizer_state(self.model)
        self.cols = cols
        self._distribute(host, state or None)
        logger.info("hybrid: dense outputs split %s", cols)

    # --- the step ------------------------------------------------------------------------------
    def _op(self, pos, layer, n):
        node, out = self.tail[layer], self.cols[layer][pos]
        key = (pos, layer, n, out)
        if key not in self.ops:
            self.ops[key] = DenseOp(self.rt.devices[pos], n, node.layer.in_features, out,
                                    node.act)
        return self.ops[key]

    def executor(self, pos, n):
        key = (pos, n)
        if key not in self.executors:
            self.executors[key] = Executor(self.heads[pos], n, upto=self.upto)
        return self.executors[key]

    def step(self, plan, n, feed, exchange, measure, contexts):
        """One forward/loss/backward of n samples split as `plan` [(device position, a, b)].
        -> loss, correct count, the replicas and slices to update, per-device busy seconds
        (with `measure`, else None)."""
        self._prepare(plan)
        self.io.bytes, self.last_positions = 0, [pos for pos, _, _ in plan]
        runs = [(pos, a, b, self.executor(pos, b - a)) for pos, a, b in plan]
        for pos, a, b, ex in runs:
            ex.begin_step()
            if measure:
                self.rt.devices[pos].kernel_events = []
            feed(ex, a, b)
        interleave([ex.forward_nodes(contexts[pos]) for pos, *_, ex in runs])
        x = self.io.staging("x0", (n, self.widths[0]))
        self.io.wait([self.io.read(ex.out[self.upto - 1], x[a:b]) for _, a, b, ex in runs])
        logits, inputs = self._forward_tail(runs, n, x)
        done, dz = self._loss(runs, n, logits)
        dy = self._backward_tail(runs, n, inputs, dz)
        if dy is not None:  # each device's rows of the head's output gradient
            for pos, a, b, ex in runs:
                self.io.upload(ex.grad[self.upto - 1], dy[a:b])
        if exchange:
            exchange.begin()
        interleave([ex.backward_nodes(exchange.reader(ex) if exchange else None,
                                      contexts[pos]) for pos, *_, ex in runs])
        loss = correct = 0
        for (*_, ex), event in zip(runs, done):
            l, c = ex.results(event)
            loss, correct = loss + l, correct + c
        if exchange:
            exchange.reduce(None, measure=False)
            self.io.bytes += exchange.bytes
        times = self._busy_times(runs) if measure else None
        updates = [ex.replica for *_, ex in runs] + [self.slices[pos] for pos, *_ in runs]
        return loss, correct, updates, times

    def _forward_tail(self, runs, n, x):
        """The dense layers on the whole batch, each device its columns. -> the logits on the
        host [n, classes], and per layer each run's device copy of the layer's input."""
        inputs = []
        for layer in range(len(self.tail)):
            ins = [self.io.array(pos, f"in{layer}", (n, self.widths[layer])) for pos, *_ in runs]
            for arr in ins:
                self.io.upload(arr, x)
            inputs.append(ins)
            y = self.io.staging(f"y{layer}", (n, self.widths[layer + 1]))
            parts, events = [], []
            for (pos, *_), arr in zip(runs, ins):
                cols = self.cols[layer][pos]
                if not cols:
                    continue
                out = self.io.array(pos, f"out{layer}", (n, cols))
                self._op(pos, layer, n).forward([arr], out, self._params(pos, layer, "params"))
                part = self.io.staging(f"y{layer}.{pos}", (n, cols))
                events.append(self.io.read(out, part))
                parts.append((self._offsets(layer)[pos], part))
            self.io.wait(events)
            for start, part in parts:
                y[:, start:start + part.shape[1]] = part
            x = y
        return x, inputs

    def _loss(self, runs, n, x):
        """The loss of each device's rows, on the device (its labels are there).
        -> the loss results' events, the logits' gradient on the host [n, classes]"""
        classes = self.widths[-1]
        dz, done, events = self.io.staging("dz", (n, classes)), [], []
        for pos, a, b, ex in runs:
            logits = self.io.array(pos, "logits", (b - a, classes))
            dlogits = self.io.array(pos, "dlogits", (b - a, classes))
            self.io.upload(logits, np.ascontiguousarray(x[a:b]))
            done.append(ex.loss(n, logits, dlogits))
            events.append(self.io.read(dlogits, dz[a:b]))
        self.io.wait(events)
        return done, dz

    def _backward_tail(self, runs, n, inputs, dy):
        """Each device's slice gradients over the whole batch; the partial input gradients
        summed on the host in device order (the same sum for every replica).
        -> the head's output gradient [n, F_0], or None where the head trains nothing"""
        head_needs_grad = runs[0][3].needs_grad[self.upto - 1]  # (trainable layers before)
        for layer in reversed(range(len(self.tail))):
            wants_dx = layer > 0 or head_needs_grad
            partials, events = [], []
            for k, (pos, *_) in enumerate(runs):
                part = self._slice_backward(pos, layer, n, inputs[layer][k], dy, wants_dx)
                if part is not None:
                    events.append(part[0])
                    partials.append(part[1])
            if not wants_dx:
                return None
            self.io.wait(events)
            dy = self.io.staging(f"sum{layer}", (n, self.widths[layer]))
            np.copyto(dy, partials[0])
            for part in partials[1:]:
                np.add(dy, part, out=dy)
        return dy

    def _slice_backward(self, pos, layer, n, layer_input, dy, wants_dx):
        """One device's slice of a dense layer backward. -> (read event, host array) of its
        partial input gradient, or None (no columns here, or no input gradient wanted)"""
        cols = self.cols[layer][pos]
        if not cols:
            return None
        start, width = self._offsets(layer)[pos], self.widths[layer]
        grad_out = self.io.array(pos, f"dy{layer}", (n, cols))
        self.io.upload(grad_out, np.ascontiguousarray(dy[:, start:start + cols]))
        dx = self.io.array(pos, f"dx{layer}", (n, width)) if wants_dx else None
        self._op(pos, layer, n).backward(
            [layer_input], self.io.array(pos, f"out{layer}", (n, cols)), grad_out, [dx],
            self._params(pos, layer, "params"), self._params(pos, layer, "grads"))
        if dx is None:
            return None
        part = self.io.staging(f"dx{layer}.{pos}", (n, width))
        return self.io.read(dx, part), part

    def _busy_times(self, runs):
        """Each device's busy time over the whole step (head and dense slice)."""
        times = []
        for pos, *_ in runs:
            device = self.rt.devices[pos]
            device.queue.finish()
            times.append((sum(map(event_seconds, device.kernel_events)), 0.0))
            device.kernel_events = None
        return times

    def _params(self, pos, layer, kind):
        name = self.tail[layer].layer.name
        table = getattr(self.slices[pos], kind)
        return {k: table[f"{name}.{k}"] for k in ("weight", "bias")}
