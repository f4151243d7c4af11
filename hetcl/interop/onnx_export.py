"""The inference graph of a built hetcl model as an ONNX file (``hetcl export --format onnx``).

The exported graph, top to bottom:
  input `pixels`: float32 [N, C, H, W] (N dynamic; [N, D] for a model built on flat vectors)
      holding raw pixel values 0..255, as the data set's uint8 images.
  `pixels.normalised` = pixels * scale + shift: the gather kernel's normalisation
      (codegen/gather.py), scale = 1/(255 std) and shift = -mean/std folded in float64 and
      rounded once to float32, so the graph sees the inputs that Runtime.forward is given.
  one ONNX op (two for GlobalAvgPool) per hetcl node that the output depends on, in the
      graph's order, each output tensor named after its layer. A ReLU that hetcl fuses into
      its producer's epilogue is its own Relu here; dropout is left out (the identity in
      evaluation); batch norm normalises with its running statistics (inference mode).
  output `logits`: float32 [N, classes], without softmax (as Runtime.forward).
Parameters are initializers under hetcl's names (conv0.weight, bn0.running_mean, ...); hetcl's
layouts are already ONNX's: Conv weights [F, C, KH, KW], Dense [out, in] (Gemm with transB=1).
metadata_props: hetcl.mean, hetcl.std, hetcl.input, hetcl.class_names (a JSON list) and the
caller's own entries.
"""
import json

import numpy as np

from .. import __version__
from ..atomic import write_atomically
from ..errors import HetclError
from ..model.batchnorm import BatchNorm1D, BatchNorm2D
from ..model.graph import Graph
from ..model.inputs import scale_shift
from ..model.layers import (Add, AvgPool2D, Conv2D, Dense, Dropout, Flatten, GlobalAvgPool,
                            MaxPool2D, ReLU, Sigmoid)

MIN_OPSET = 13  # BatchNormalization without the old `spatial` attribute, Flatten on any rank
PROTOBUF_LIMIT = 2 ** 31 - 1  # bytes: one ONNX file (a protobuf message) holds at most this


class ExportError(HetclError):
    """The model cannot be written in the asked format (a layer it has no op for, ...)."""


def _onnx():
    try:
        import onnx
    except ImportError:
        raise HetclError("ONNX export needs the onnx package: pip install 'hetcl[onnx]'") \
            from None
    return onnx


class _Emitter:
    """Collects the ONNX nodes and initializers of one model."""

    def __init__(self, onnx, params):
        self.helper, self.params = onnx.helper, params
        self.numpy_helper = onnx.numpy_helper
        self.nodes, self.initializers = [], []

    def op(self, op_type, inputs, output, name, **attrs):
        self.nodes.append(self.helper.make_node(op_type, list(inputs), [output], name=name,
                                                **attrs))

    def constant(self, name, value):
        array = np.asarray(value, np.float32)
        self.initializers.append(self.numpy_helper.from_array(array, name))
        return name

    def param(self, layer, key):
        name = f"{layer.name}.{key}"
        return self.constant(name, self.params[name])


# --- one converter per layer type: (emitter, layer, input tensor names, output name) ---------
def _conv(e, layer, ins, out):
    (ph, pw), bias = layer.padding, [e.param(layer, "bias")] if layer.bias else []
    e.op("Conv", [ins[0], e.param(layer, "weight")] + bias, out, layer.name,
         kernel_shape=list(layer.kernel_size), strides=list(layer.stride),
         pads=[ph, pw, ph, pw], dilations=[1, 1], group=1)


def _dense(e, layer, ins, out):
    e.op("Gemm", [ins[0], e.param(layer, "weight"), e.param(layer, "bias")], out, layer.name,
         transB=1)


def _pool(op_type):
    def convert(e, layer, ins, out):
        # hetcl's windows never leave the image (no padding, floor of the output size), so
        # ONNX's defaults (pads 0, ceil_mode 0) divide each window by its full size as hetcl.
        e.op(op_type, ins, out, layer.name, kernel_shape=list(layer.size),
             strides=list(layer.stride))
    return convert


def _global_avg_pool(e, layer, ins, out):  # hetcl's output is (C,): pool to [N, C, 1, 1], flatten
    e.op("GlobalAveragePool", ins, f"{layer.name}.pooled", layer.name)
    e.op("Flatten", [f"{layer.name}.pooled"], out, f"{layer.name}.flatten", axis=1)


def _unary(op_type, **attrs):
    def convert(e, layer, ins, out):
        e.op(op_type, ins, out, layer.name, **attrs)
    return convert


def _add(e, layer, ins, out):
    e.op("Add" if len(ins) == 2 else "Sum", ins, out, layer.name)


def _batch_norm(e, layer, ins, out):  # [N, C, H, W] or [N, C]: both are BatchNormalization's
    e.op("BatchNormalization", [ins[0]] + [e.param(layer, k) for k in
                                           ("weight", "bias", "running_mean", "running_var")],
         out, layer.name, epsilon=layer.eps)


CONVERTERS = {Conv2D: _conv, Dense: _dense, MaxPool2D: _pool("MaxPool"),
              AvgPool2D: _pool("AveragePool"), GlobalAvgPool: _global_avg_pool,
              Flatten: _unary("Flatten", axis=1), ReLU: _unary("Relu"),
              Sigmoid: _unary("Sigmoid"), Add: _add, BatchNorm1D: _batch_norm,
              BatchNorm2D: _batch_norm, Dropout: None}  # None: left out (see the docstring)


def _needed(model):
    """The indices of the nodes the output depends on, in the graph's (topological) order."""
    needed, stack = set(), [model.output_node]
    while stack:
        i = stack.pop()
        if i not in needed:
            needed.add(i)
            stack.extend(model.nodes[i].inputs)
    return sorted(needed - {0})


def _check_layers(model, nodes):
    known = ", ".join(sorted(t.__name__ for t in CONVERTERS))
    for i in nodes:
        layer = model.nodes[i].layer
        if type(layer) not in CONVERTERS:  # a subclass may compute something else
            raise ExportError(f"layer '{layer.name}' of type {type(layer).__name__} has no ONNX "
                              f"export: the layers that export are {known}")


def _emit_graph(e, model, nodes, scale, shift):
    """The normalisation and every node in `nodes`; the output node's tensor is `logits`."""
    e.op("Mul", ["pixels", e.constant("pixels.scale", scale)], "pixels.scaled", "normalise.mul")
    e.op("Add", ["pixels.scaled", e.constant("pixels.shift", shift)], "pixels.normalised",
         "normalise.add")
    names = {0: "pixels.normalised"}
    for i in nodes:
        node = model.nodes[i]
        ins = [names[j] for j in node.inputs]
        out = "logits" if i == model.output_node else node.layer.name
        convert = CONVERTERS[type(node.layer)]
        if convert is None and i != model.output_node:
            names[i] = ins[0]  # dropout: its consumers read its input
            continue
        if convert is None:
            e.op("Identity", ins, out, node.layer.name)
        else:
            convert(e, node.layer, ins, out)
        names[i] = out


def _metadata(model, mean, std, class_names, metadata, classes):
    shape = "[N, C, H, W]" if len(model.input_shape) == 3 else \
        "[N, " + ", ".join(str(d) for d in model.input_shape) + "]"
    if class_names is None:
        class_names = [str(i) for i in range(classes)]
    if len(class_names) != classes:
        raise ExportError(f"{len(class_names)} class names for a model with {classes} outputs: "
                          f"pass one name per class")
    props = {"hetcl.mean": repr(float(mean)), "hetcl.std": repr(float(std)),
             "hetcl.input": f"float32 pixels 0..255, {shape}; normalised inside the graph",
             "hetcl.class_names": json.dumps([str(c) for c in class_names])}
    clash = sorted(set(props) & set(metadata or {}))
    if clash:
        raise ExportError(f"metadata key(s) {', '.join(clash)} are written by hetcl itself: "
                          f"use other names")
    props.update({str(k): str(v) for k, v in (metadata or {}).items()})
    return props


def _check_arguments(onnx, model, std, opset):
    if not isinstance(model, Graph) or not model.built:
        raise ExportError(f"export needs a built hetcl model (Graph or Sequential), got "
                          f"{type(model).__name__}: call model.build(input_shape) first")
    if model.output_node in (None, 0):
        raise ExportError("the model has no layers: add some before exporting it")
    if not float(std) > 0:
        raise ExportError(f"std must be above 0 to normalise the pixels (got {std})")
    newest = onnx.defs.onnx_opset_version()
    if not MIN_OPSET <= int(opset) <= newest:
        raise ExportError(f"opset {opset} is not one this export writes: use {MIN_OPSET} to "
                          f"{newest}")


def onnx_model(model, mean=0.0, std=1.0, class_names=None, metadata=None, opset=17):
    """The ONNX ModelProto of a built hetcl model's inference graph (see the module docstring).
    mean/std: the data set's (Dataset.mean/.std, of pixels/255); class_names: one per output
    (default "0", "1", ...); metadata: more {key: value} for metadata_props."""
    onnx = _onnx()
    _check_arguments(onnx, model, std, opset)
    nodes = _needed(model)
    _check_layers(model, nodes)
    params = model.parameters()
    size = sum(v.nbytes for v in params.values())
    if size > PROTOBUF_LIMIT:
        raise ExportError(f"the parameters take {size / 2 ** 30:.1f} GiB and one ONNX file "
                          f"holds at most 2 GiB: export safetensors instead")
    e = _Emitter(onnx, params)
    _emit_graph(e, model, nodes, *scale_shift(mean, std))  # (as the gather kernel normalises)
    h, out_shape = onnx.helper, model.nodes[model.output_node].shape
    graph = h.make_graph(
        e.nodes, "hetcl", [h.make_tensor_value_info("pixels", onnx.TensorProto.FLOAT,
                                                    ["N", *model.input_shape])],
        [h.make_tensor_value_info("logits", onnx.TensorProto.FLOAT, ["N", *out_shape])],
        e.initializers)
    opsets = [h.make_opsetid("", int(opset))]
    proto = h.make_model(graph, opset_imports=opsets, producer_name="hetcl",
                         producer_version=__version__,
                         ir_version=h.find_min_ir_version_for(opsets))
    props = _metadata(model, mean, std, class_names, metadata, int(np.prod(out_shape)))
    h.set_model_props(proto, props)
    return proto


def export_onnx(model, path, mean=0.0, std=1.0, class_names=None, metadata=None, opset=17):
    """Write the inference graph of a built hetcl model to `path` as ONNX (arguments: see
    onnx_model), checked by onnx.checker first and written atomically. -> path"""
    onnx = _onnx()
    proto = onnx_model(model, mean, std, class_names, metadata, opset)
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ExportError(f"the ONNX graph of this model fails onnx.checker: {first}") from err
    data = proto.SerializeToString()
    write_atomically(str(path), lambda f: f.write(data), durable=True)
    return path
