"""Layers: what each computes, its parameters and shapes (device-independent), and ``bind()``,
which builds its kernels for one device and one batch size once the input shape is known.

Shapes here are per sample: (C, H, W) for images, (D,) for vectors; a batch adds N in front.
Weights use PyTorch's layouts: Dense [out, in] (y = x W^T + b), Conv2D [F, C, KH, KW].
A bound op enqueues on its device's in-order queue and never waits:
  forward(xs, y, params)                       xs: input DeviceArrays, y: output DeviceArray
  backward(xs, y, dy, dxs, params, grads)      dxs[i] is None where no input gradient is needed
params and grads map "weight"/"bias" to DeviceArrays of the device's replica; params also holds
a layer's running statistics (batch norm's running_mean/var: state, not trained).
Layers whose output depends on the step (takes_step: batch norm, dropout) take one more
argument, `step`: an engine.executor.StepContext in training, None in evaluation; their forward
and backward return an iterable of per-channel sums to all-reduce across the step's devices
(empty where none), each summed before the iteration continues.
"""
import zlib

import numpy as np

from ..errors import ShapeError


def _pair(v):
    return (int(v), int(v)) if np.isscalar(v) else tuple(int(x) for x in v)


class Layer:
    kind = "layer"
    activation = None  # "relu"/"sigmoid" for activation layers (fusable into the producer)
    fuses_activation = False  # Dense, Conv2D and batch norm apply a following activation
    takes_step = False        # its kernels take the step's StepContext (see above)

    def __init__(self, name=None):
        self.name = name
        self.input_shape = self.output_shape = None

    def build(self, *input_shapes):
        self.input_shape = input_shapes[0] if len(input_shapes) == 1 else input_shapes
        self.output_shape = tuple(int(s) for s in self.compute_output_shape(*input_shapes))
        return self.output_shape

    def compute_output_shape(self, shape):
        return shape

    def param_shapes(self):
        """The trained tensors {short name: shape}."""
        return {}

    def running_shapes(self):
        """State the layer keeps up to date itself, not trained (batch norm's running
        statistics): saved and loaded with the parameters, no gradient."""
        return {}

    def check_batch(self, global_n):
        """Raise where a training batch of global_n samples cannot run through this layer."""

    def init_params(self, rng):
        return {}

    def _error(self, msg):
        return ShapeError(f"{self!r} (layer '{self.name}'): {msg}")

    def __repr__(self):
        return f"{type(self).__name__}()"


class Dense(Layer):
    kind = "dense"
    fuses_activation = True

    def __init__(self, in_features, out_features, name=None):
        super().__init__(name)
        self.in_features, self.out_features = int(in_features), int(out_features)

    def compute_output_shape(self, shape):
        if tuple(shape) != (self.in_features,):
            raise self._error(f"expects input shape ({self.in_features},), got {tuple(shape)}"
                              + (" (add Flatten() first?)" if len(shape) > 1 else ""))
        return (self.out_features,)

    def param_shapes(self):
        return {"weight": (self.out_features, self.in_features), "bias": (self.out_features,)}

    def init_params(self, rng):  # He-normal weights, zero bias
        std = np.sqrt(2.0 / self.in_features)
        return {"weight": (rng.standard_normal(self.param_shapes()["weight"]) * std
                           ).astype(np.float32),
                "bias": np.zeros(self.out_features, np.float32)}

    def bind(self, device, batch, act="none"):
        from ..engine.ops import DenseOp
        return DenseOp(device, batch, self.in_features, self.out_features, act)

    def __repr__(self):
        return f"Dense({self.in_features}, {self.out_features})"


class Conv2D(Layer):
    kind = "conv"
    fuses_activation = True

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, bias=True,
                 name=None):
        """bias=False: no bias (a convolution followed by batch norm, whose shift replaces it)."""
        super().__init__(name)
        self.in_channels, self.out_channels = int(in_channels), int(out_channels)
        self.bias = bool(bias)
        self.kernel_size, self.stride, self.padding = (_pair(kernel_size), _pair(stride),
                                                       _pair(padding))

    def compute_output_shape(self, shape):
        if len(shape) != 3 or shape[0] != self.in_channels:
            raise self._error(f"expects input shape ({self.in_channels}, H, W), got "
                              f"{tuple(shape)}")
        out = [(shape[1 + i] + 2 * self.padding[i] - self.kernel_size[i]) // self.stride[i] + 1
               for i in range(2)]
        if min(out) < 1:
            raise self._error(f"output would be empty for input {tuple(shape)}: the "
                              f"{self.kernel_size} kernel is larger than the padded image")
        return (self.out_channels, out[0], out[1])

    def param_shapes(self):
        weight = {"weight": (self.out_channels, self.in_channels) + self.kernel_size}
        return dict(weight, bias=(self.out_channels,)) if self.bias else weight

    def init_params(self, rng):
        fan_in = self.in_channels * self.kernel_size[0] * self.kernel_size[1]
        weight = {"weight": (rng.standard_normal(self.param_shapes()["weight"])
                             * np.sqrt(2.0 / fan_in)).astype(np.float32)}
        return dict(weight, bias=np.zeros(self.out_channels, np.float32)) if self.bias \
            else weight

    def bind(self, device, batch, act="none"):
        from ..engine.ops import ConvOp
        return ConvOp(device, batch, self.input_shape, self.out_channels, self.kernel_size,
                      self.stride, self.padding, act, self.bias)

    def __repr__(self):
        return (f"Conv2D({self.in_channels}, {self.out_channels}, {self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}"
                f"{'' if self.bias else ', bias=False'})")


class _Pool2D(Layer):
    """A window slid over each channel without padding: every window lies inside the image."""
    kind = "pool"

    def __init__(self, size=2, stride=None, name=None):
        super().__init__(name)
        self.size = _pair(size)
        self.stride = _pair(stride) if stride is not None else self.size

    def compute_output_shape(self, shape):
        if len(shape) != 3:
            raise self._error(f"expects input shape (C, H, W), got {tuple(shape)}")
        out = [(shape[1 + i] - self.size[i]) // self.stride[i] + 1 for i in range(2)]
        if min(out) < 1:
            raise self._error(f"window {self.size} is larger than the input {tuple(shape)}")
        return (shape[0], out[0], out[1])

    def __repr__(self):
        return f"{type(self).__name__}({self.size}, stride={self.stride})"


class MaxPool2D(_Pool2D):
    def bind(self, device, batch, act="none"):
        from ..engine.ops import MaxPoolOp
        return MaxPoolOp(device, batch, self.input_shape, self.size, self.stride)


class AvgPool2D(_Pool2D):
    """The mean of each window (PyTorch's AvgPool2d without padding)."""

    def bind(self, device, batch, act="none"):
        from ..engine.ops import AvgPoolOp
        return AvgPoolOp(device, batch, self.input_shape, self.size, self.stride)


class GlobalAvgPool(Layer):
    """The mean of each channel over its whole image: (C, H, W) -> (C,) (PyTorch's
    AdaptiveAvgPool2d(1) followed by a flatten)."""
    kind = "pool"

    def compute_output_shape(self, shape):
        if len(shape) != 3:
            raise self._error(f"expects input shape (C, H, W), got {tuple(shape)}")
        return (shape[0],)

    def bind(self, device, batch, act="none"):
        from ..engine.ops import AvgPoolOp
        return AvgPoolOp(device, batch, self.input_shape, self.input_shape[1:], (1, 1))


class Flatten(Layer):
    """A view: the executor gives its output the input's memory, no kernel runs."""
    kind = "flatten"
    alias = True

    def compute_output_shape(self, shape):
        return (int(np.prod(shape)),)


class _Activation(Layer):
    def bind(self, device, batch, act="none"):
        from ..engine.ops import ActivationOp
        return ActivationOp(device, batch, int(np.prod(self.input_shape)), self.activation)


class ReLU(_Activation):
    kind, activation = "relu", "relu"


class Sigmoid(_Activation):
    kind, activation = "sigmoid", "sigmoid"


class Add(Layer):
    """Element-wise sum of two or more inputs of one shape (merges graph branches)."""
    kind = "add"

    def compute_output_shape(self, *shapes):
        if len(shapes) < 2 or any(tuple(s) != tuple(shapes[0]) for s in shapes):
            raise self._error(f"needs two or more inputs of one shape, got {list(shapes)}")
        return shapes[0]

    def bind(self, device, batch, act="none"):
        from ..engine.ops import AddOp
        return AddOp(device, batch * int(np.prod(self.output_shape)), len(self.input_shape))


class Dropout(Layer):
    """PyTorch's Dropout: in training each element is zeroed with probability p and the rest
    scaled by 1/(1-p); in evaluation the identity. The mask is a function of (the run's seed,
    the layer, the step, the element's index in the whole batch), made on the device
    (kernels/dropout.cl.mako): a resumed run and any split of the batch draw the same one."""
    kind = "dropout"
    takes_step = True

    def __init__(self, p=0.5, name=None):
        super().__init__(name)
        if not 0 <= p < 1:
            raise ShapeError(f"Dropout needs 0 <= p < 1 (got p={p})")
        self.p = float(p)

    def key(self):
        """The layer's part of the mask's key: a hash of its name (stable across runs)."""
        return zlib.crc32(self.name.encode())

    def bind(self, device, batch, act="none"):
        from ..engine.ops import DropoutOp
        return DropoutOp(device, batch, int(np.prod(self.input_shape)), self.p, self.key())

    def __repr__(self):
        return f"Dropout(p={self.p})"
