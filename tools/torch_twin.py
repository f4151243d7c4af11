"""A torch.nn twin of any hetcl Graph, for the tests and benchmarks that compare hetcl with
PyTorch: one torch module per layer (in PyTorch's layouts, which hetcl's parameters share), the graph's wiring,
and hetcl's parameters and running statistics copied in by name. Dropout is left out (masks
come from different generators): compare models with dropout in evaluation mode only."""
import numpy as np
import torch
from torch import nn

from hetcl.layers import (Add, AvgPool2D, BatchNorm1D, BatchNorm2D, Conv2D, Dense, Dropout,
                          Flatten, GlobalAvgPool, MaxPool2D, ReLU, Sigmoid)


def torch_module(layer, dropout=False):
    """The torch module computing what one hetcl layer computes, with PyTorch's names for its
    tensors; None for Add (the twin adds its inputs). dropout: nn.Dropout for Dropout (else
    the identity, see the module's docstring)."""
    if isinstance(layer, Conv2D):
        return nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, layer.stride,
                         layer.padding, bias=layer.bias)
    if isinstance(layer, Dense):
        return nn.Linear(layer.in_features, layer.out_features)
    if isinstance(layer, (BatchNorm1D, BatchNorm2D)):
        kind = nn.BatchNorm2d if isinstance(layer, BatchNorm2D) else nn.BatchNorm1d
        return kind(layer.num_features, eps=layer.eps, momentum=layer.momentum)
    simple = {MaxPool2D: lambda: nn.MaxPool2d(layer.size, layer.stride),
              AvgPool2D: lambda: nn.AvgPool2d(layer.size, layer.stride),
              GlobalAvgPool: lambda: nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
              Dropout: lambda: nn.Dropout(layer.p) if dropout else nn.Identity(),
              ReLU: nn.ReLU, Sigmoid: nn.Sigmoid, Flatten: nn.Flatten}
    for kind, make in simple.items():
        if isinstance(layer, kind):
            return make()
    if isinstance(layer, Add):
        return None
    raise TypeError(f"no torch twin for {layer!r}")


class TorchTwin(nn.Module):
    def __init__(self, graph):
        super().__init__()
        self.graph = graph
        self.layers = nn.ModuleDict()
        for node in graph.nodes[1:]:
            module = torch_module(node.layer)
            if module is not None:
                self.layers[node.layer.name] = module
        self.load_from(graph.parameters())

    def load_from(self, params):
        """Copy hetcl's {"<layer>.<tensor>": array} into the twin (PyTorch's names match)."""
        state = {name: torch.tensor(np.asarray(v)) for name, v in params.items()}
        missing, unexpected = self.layers.load_state_dict(state, strict=False)
        assert not unexpected and all(k.endswith("num_batches_tracked") for k in missing), \
            (missing, unexpected)

    def forward(self, x):
        out = {0: x}
        for node in self.graph.nodes[1:]:
            ins = [out[i] for i in node.inputs]
            out[node.index] = sum(ins) if isinstance(node.layer, Add) else \
                self.layers[node.layer.name](ins[0])
        return out[self.graph.output_node]

    def named_tensors(self):
        """{hetcl name: numpy array} of the twin's parameters and running statistics."""
        return {k: v.detach().numpy().copy() for k, v in self.layers.state_dict().items()
                if not k.endswith("num_batches_tracked")}
