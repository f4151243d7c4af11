"""hetcl's parameter names and the PyTorch state_dict names of the same architecture, both ways.

hetcl names a tensor "<layer name>.<tensor>" (conv0.weight, bn3.running_mean) and keeps it in
PyTorch's layout (Dense [out, in], Conv2D [F, C, KH, KW]), so only the names differ:
- a Sequential: the torch.nn.Sequential of the same layers in the same order, one module per
  hetcl layer at its position (0.weight, 3.bias, 5.running_mean; ReLU, pooling, Flatten and
  Dropout hold their places without tensors);
- a CIFAR ResNet (models.resnet20, or any Graph of its shape: stem conv-bn-relu, basic blocks
  ending in Add + ReLU, global average pooling, dense): the naming of torchvision's ResNet and
  the common CIFAR ports - conv1, bn1, layer{stage}.{block}.conv1/.bn1/.conv2/.bn2, the
  projection shortcut layer{stage}.{block}.shortcut.0 (conv) / .shortcut.1 (bn), linear;
- any other Graph: its hetcl names are its PyTorch names (a torch.nn.ModuleDict keyed by layer
  name, as tools/torch_twin.py builds, has exactly these).
PyTorch's batch norm also keeps "<module>.num_batches_tracked", an int64 count that hetcl does
not use: written on export, dropped on import.
"""
import numpy as np

from ..errors import HetclError
from ..model.batchnorm import BatchNorm2D
from ..model.graph import Sequential
from ..model.layers import Add, Conv2D, Dense, GlobalAvgPool, ReLU

TRACKED = "num_batches_tracked"
SHOWN = 4  # names listed per kind of problem before "and N more"


def model_shapes(model):
    """{hetcl name: shape} of every tensor of a built model (parameters and running
    statistics), in the model's order."""
    if not model.built:
        raise HetclError("the model is not built yet: call model.build(input_shape) first")
    shapes = {}
    for node in model.nodes[1:]:
        layer = node.layer
        for key, shape in {**layer.param_shapes(), **layer.running_shapes()}.items():
            shapes[f"{layer.name}.{key}"] = tuple(int(s) for s in shape)
    return shapes


def torch_prefixes(model):
    """{layer name: the path of its module in the PyTorch model} (see the module docstring)."""
    model_shapes(model)  # built: every layer has its name
    layers = [node.layer for node in model.nodes[1:]]
    if isinstance(model, Sequential):
        return {layer.name: str(i) for i, layer in enumerate(layers)}
    return _resnet_prefixes(model.nodes, model.output_node) or \
        {layer.name: layer.name for layer in layers}


def torch_names(model):
    """{hetcl name: PyTorch state_dict name} of every tensor of a built model."""
    prefixes = torch_prefixes(model)
    return {f"{node.layer.name}.{key}": f"{prefixes[node.layer.name]}.{key}"
            for node in model.nodes[1:]
            for key in {**node.layer.param_shapes(), **node.layer.running_shapes()}}


def tracked_names(model):
    """The PyTorch names of the batch norm layers' num_batches_tracked counts."""
    prefixes = torch_prefixes(model)
    return [f"{prefixes[node.layer.name]}.{TRACKED}" for node in model.nodes[1:]
            if "running_mean" in node.layer.running_shapes()]


def naming(model, names):
    """Which names `names` mostly are: "hetcl", "torch", or None where neither."""
    names = set(names)
    hetcl = len(names & set(model_shapes(model)))
    torch = len(names & (set(torch_names(model).values()) | set(tracked_names(model))))
    if not hetcl and not torch:
        return None
    return "torch" if torch > hetcl else "hetcl"


def to_hetcl_names(model, arrays, where="the parameters"):
    """{hetcl name: array} in the model's order from arrays under hetcl's names or PyTorch's
    (num_batches_tracked dropped). Raises one HetclError naming every unknown name, missing
    tensor and shape mismatch; `where` (e.g. the file) starts the message."""
    shapes = model_shapes(model)
    if naming(model, arrays) == "hetcl":
        outside, tracked = {name: name for name in shapes}, set()
    else:
        outside, tracked = torch_names(model), set(tracked_names(model))
    inside = {v: k for k, v in outside.items()}
    unknown = sorted(n for n in arrays if n not in inside and n not in tracked)
    missing = [outside[n] for n in shapes if outside[n] not in arrays]
    wrong = [f"{n}: file {tuple(np.shape(a))} vs model {shapes[inside[n]]}"
             for n, a in arrays.items() if n in inside and tuple(np.shape(a)) != shapes[inside[n]]]
    if unknown or missing or wrong:
        problems = [f"{what} {_few(items)}" for what, items in
                    (("unknown names", unknown), ("missing", missing), ("shapes differ:", wrong))
                    if items]
        raise HetclError(f"{where}: the tensors do not fit this model ({len(shapes)} tensors): "
                         f"{'; '.join(problems)} - is it the state_dict of another model, or of "
                         f"this one for other images or classes? Build the model it was saved "
                         f"from (tools/torch_models.py defines the PyTorch twins)")
    return {name: arrays[outside[name]] for name in shapes}


def _few(items):
    more = f" and {len(items) - SHOWN} more" if len(items) > SHOWN else ""
    return ", ".join(items[:SHOWN]) + more


def _resnet_prefixes(nodes, output_node):
    """The CIFAR ResNet names read off the graph's structure, or None where it has another:
    conv-bn-relu from the input, basic blocks (a new stage where a block's shortcut is a
    projection), global average pooling, a dense layer last."""
    if not _chain(nodes, 1, 0, (Conv2D, BatchNorm2D, ReLU)):
        return None
    names = {nodes[1].layer.name: "conv1", nodes[2].layer.name: "bn1"}
    x, stage, block = 3, 0, 0
    while x + 1 < len(nodes) and isinstance(nodes[x + 1].layer, Conv2D):
        found = _basic_block(nodes, x)
        if found is None:
            return None
        parts, x = found
        if stage == 0 or "shortcut.0" in parts:
            stage, block = stage + 1, 0
        names.update({nodes[i].layer.name: f"layer{stage}.{block}.{part}"
                      for part, i in parts.items()})
        block += 1
    if not stage or not _chain(nodes, x + 1, x, (GlobalAvgPool, Dense)) \
            or len(nodes) != x + 3 or output_node != x + 2:
        return None
    names[nodes[x + 2].layer.name] = "linear"
    return names


def _basic_block(nodes, x):
    """The basic block reading node x, starting at node x + 1: conv bn relu conv bn, a
    conv bn projection of x or x itself, Add, ReLU. -> ({PyTorch part: node index}, the index
    of its final ReLU), or None where the nodes are not such a block."""
    start = x + 1
    if not _chain(nodes, start, x, (Conv2D, BatchNorm2D, ReLU, Conv2D, BatchNorm2D)):
        return None
    parts = {"conv1": start, "bn1": start + 1, "conv2": start + 3, "bn2": start + 4}
    add, shortcut = start + 5, x
    if _chain(nodes, start + 5, x, (Conv2D, BatchNorm2D)):
        parts.update({"shortcut.0": start + 5, "shortcut.1": start + 6})
        add, shortcut = start + 7, start + 6
    if not (add < len(nodes) and isinstance(nodes[add].layer, Add)
            and sorted(nodes[add].inputs) == sorted([start + 4, shortcut])
            and _chain(nodes, add + 1, add, (ReLU,))):
        return None
    return parts, add + 1


def _chain(nodes, start, source, kinds):
    """Whether nodes start, start+1, ... are layers of `kinds`, each reading only the one
    before it and the first reading node `source`."""
    if start + len(kinds) > len(nodes):
        return False
    for offset, kind in enumerate(kinds):
        node = nodes[start + offset]
        if not isinstance(node.layer, kind) or node.inputs != [start + offset - 1 if offset
                                                              else source]:
            return False
    return True
