"""Graph (a DAG of layers) and Sequential (a chain): structure, shapes, names and parameters.

Nodes are numbered in the order they are added, which is a topological order (a node's inputs
exist before it). Node 0 is the input. Parameters live here on the host as float32 numpy arrays,
named "<layer name>.weight" / ".bias" (and a batch norm's ".running_mean" / ".running_var":
in parameters() like PyTorch's state_dict, but not trained: running_names()); a Runtime keeps
device replicas and, after it updates them, registers a pull so that ``parameters()`` returns
the current values.
"""
import numpy as np

from ..errors import HetclError, ShapeError

LOSSES = ("softmax_ce", "sigmoid_bce")


class Node:
    def __init__(self, index, layer, inputs):
        self.index, self.layer, self.inputs = index, layer, list(inputs)
        self.consumers = []
        self.shape = None
        self.fused_into = None  # activation node applied in its producer's epilogue
        self.act = "none"       # activation a Dense/Conv node applies in its epilogue


class Graph:
    def __init__(self, loss="softmax_ce", seed=None):
        if loss not in LOSSES:
            raise HetclError(f"unknown loss {loss!r}: use one of {', '.join(LOSSES)}")
        self.loss, self.seed = loss, seed
        self.nodes = []
        self.output_node = None
        self.built = False
        self._params = {}
        self._running = set()  # names in _params that are running statistics, not trained
        self.version = 0   # bumped whenever the host parameters change
        self._pull = None  # callable returning fresher parameters held by a device

    # --- structure -------------------------------------------------------------------------
    def input(self, shape=None):
        if self.nodes:
            raise HetclError("a graph has one input, and it must be added first")
        self.nodes.append(Node(0, None, []))
        self.input_shape = tuple(shape) if shape is not None else None
        return 0

    def add(self, layer, *inputs):
        if not self.nodes:
            raise HetclError("call graph.input(shape) before adding layers")
        if self.built:
            raise HetclError("the graph is already built; build a new one to change it")
        for i in inputs:
            if not 0 <= int(i) < len(self.nodes):
                raise HetclError(f"input node {i} does not exist (graph has {len(self.nodes)})")
        if not inputs:
            raise HetclError(f"{layer!r} needs at least one input node")
        node = Node(len(self.nodes), layer, inputs)
        self.nodes.append(node)
        self.output_node = node.index
        return node.index

    def output(self, node):
        self.output_node = int(node)

    # --- build -----------------------------------------------------------------------------
    def build(self, input_shape=None):
        if self.built:
            if input_shape is not None and tuple(input_shape) != self.input_shape:
                raise ShapeError(f"model was built for input shape {self.input_shape}, got "
                                 f"{tuple(input_shape)}")
            return self
        if input_shape is not None:
            if self.input_shape is not None and tuple(input_shape) != self.input_shape:
                raise ShapeError(f"model input shape is {self.input_shape}, got "
                                 f"{tuple(input_shape)}")
            self.input_shape = tuple(int(s) for s in input_shape)
        if self.input_shape is None:
            raise HetclError("the model's input shape is unknown: pass data or input_shape")
        rng = np.random.default_rng(self.seed)
        self.nodes[0].shape = self.input_shape
        counts = {}
        for node in self.nodes[1:]:
            layer = node.layer
            if layer.name is None:
                layer.name = f"{layer.kind}{counts.get(layer.kind, 0)}"
                counts[layer.kind] = counts.get(layer.kind, 0) + 1
            node.shape = layer.build(*(self.nodes[i].shape for i in node.inputs))
            for i in node.inputs:
                self.nodes[i].consumers.append(node.index)
            for key, value in layer.init_params(rng).items():
                self._params[f"{layer.name}.{key}"] = value
            self._running.update(f"{layer.name}.{key}" for key in layer.running_shapes())
        self._fuse_activations()
        self.built = True
        return self

    def _fuse_activations(self):
        for node in self.nodes[1:]:
            producer = self.nodes[node.inputs[0]]
            if (node.layer.activation and producer.layer is not None
                    and producer.layer.fuses_activation and producer.consumers == [node.index]
                    and producer.index != self.output_node):
                producer.act = node.layer.activation
                node.fused_into = producer.index

    # --- parameters ------------------------------------------------------------------------
    def parameters(self):
        """Ordered {name: numpy array} (copies: changing them does not change the model)."""
        self._check_built()
        if self._pull is not None:
            self._params.update(self._pull())
            self._pull = None
        return {k: v.copy() for k, v in self._params.items()}

    def running_names(self):
        """The names in parameters() that are running statistics (no gradient, no update)."""
        return frozenset(self._running)

    def check_batch(self, global_n):
        """Raise (one line) where a training batch of global_n samples cannot run."""
        for node in self.nodes[1:]:
            node.layer.check_batch(global_n)

    def fresher_on_devices(self, pull):
        """The devices hold newer parameters than the host (a runtime updated them): the next
        parameters() call takes them from pull() -> {name: array}. -> the new version, which
        the devices that hold these parameters are stamped with."""
        self._pull = pull
        self.version += 1
        return self.version

    def load_parameters(self, params):
        """{name: array} under this model's names, or under the PyTorch state_dict names of
        the same architecture (hetcl/interop/torch_names.py)."""
        self._check_built()
        if not set(params) <= set(self._params):
            from ..interop import torch_names  # imported here: interop builds on the model
            if torch_names.naming(self, params) != "hetcl":
                params = torch_names.to_hetcl_names(self, params)
        missing = set(self._params) - set(params)
        unknown = set(params) - set(self._params)
        if missing and not unknown and missing <= self._running:
            layers = sorted({name.rsplit(".", 1)[0] for name in missing})
            raise ShapeError(f"the parameters lack the running statistics of batch norm "
                             f"layer(s) {', '.join(layers)}: they were saved from a model "
                             f"without them; train this model from the start")
        if missing or unknown:
            raise ShapeError(f"parameters do not fit this model: missing {sorted(missing)}, "
                             f"unknown {sorted(unknown)}")
        for k, v in params.items():
            if tuple(np.shape(v)) != self._params[k].shape:
                raise ShapeError(f"parameter {k} has shape {tuple(np.shape(v))}, the model "
                                 f"needs {self._params[k].shape}")
        self._params = {k: np.array(params[k], np.float32) for k in self._params}
        self._pull = None
        self.version += 1

    def _check_built(self):
        if not self.built:
            raise HetclError("the model is not built yet: call model.build(input_shape) or "
                             "run it on data first")

    def summary(self):
        lines = []
        for node in self.nodes[1:]:
            n_params = sum(int(np.prod(s)) for s in node.layer.param_shapes().values())
            fused = f" (fused into {self.nodes[node.fused_into].layer.name})" \
                if node.fused_into is not None else ""
            lines.append(f"{node.layer.name:<10} {node.layer!r:<40} {str(node.shape):<16} "
                         f"{n_params}{fused}")
        return "\n".join(lines)


class Sequential(Graph):
    """A chain of layers; the input shape is taken from the first data it sees if not given."""

    def __init__(self, layers, loss="softmax_ce", seed=None, input_shape=None):
        super().__init__(loss, seed)
        self.input(input_shape)
        node = 0
        for layer in layers:
            node = self.add(layer, node)
