"""Batch normalisation layers (Ioffe and Szegedy, 2015), as PyTorch's BatchNorm1d/BatchNorm2d.

Training: each channel is normalised by the mean and (biased) variance of the WHOLE batch -
every device's and every rank's samples (engine/ops.py: BatchNormOp; the per-channel sums are
all-reduced in the middle of the forward and backward passes) - then scaled by weight and
shifted by bias; running_mean/running_var follow the batch statistics with `momentum` (the
variance unbiased, as PyTorch's). Evaluation: the running statistics instead.
"""
import numpy as np

from .layers import Layer


class _BatchNorm(Layer):
    kind = "bn"
    fuses_activation = True  # BN + ReLU in one pass
    takes_step = True

    def __init__(self, num_features, eps=1e-5, momentum=0.1, name=None):
        super().__init__(name)
        self.num_features, self.eps, self.momentum = int(num_features), float(eps), \
            float(momentum)
        if self.num_features < 1 or not self.eps > 0 or not 0 <= self.momentum <= 1:
            raise self._error(f"needs num_features >= 1, eps > 0 and 0 <= momentum <= 1 (got "
                              f"{num_features}, eps={eps}, momentum={momentum})")

    def values_per_channel(self):
        """Values of one channel in one sample (H*W for images, 1 for vectors)."""
        return int(np.prod(self.input_shape[1:]))

    def check_batch(self, global_n):
        if global_n * self.values_per_channel() < 2:
            raise self._error(f"a training batch of {global_n} gives each channel one value, "
                              f"and batch statistics need two or more: use a larger batch")

    def param_shapes(self):
        return {"weight": (self.num_features,), "bias": (self.num_features,)}

    def running_shapes(self):
        return {"running_mean": (self.num_features,), "running_var": (self.num_features,)}

    def init_params(self, rng):  # PyTorch's: weight 1, bias 0, running statistics 0 and 1
        c = self.num_features
        return {"weight": np.ones(c, np.float32), "bias": np.zeros(c, np.float32),
                "running_mean": np.zeros(c, np.float32), "running_var": np.ones(c, np.float32)}

    def bind(self, device, batch, act="none"):
        from ..engine.ops import BatchNormOp
        return BatchNormOp(device, batch, self.num_features, self.values_per_channel(), act,
                           self.eps, self.momentum)

    def __repr__(self):
        return f"{type(self).__name__}({self.num_features})"


class BatchNorm2D(_BatchNorm):
    """Over images (C, H, W): per channel, statistics over the batch and the image."""

    def compute_output_shape(self, shape):
        if len(shape) != 3 or shape[0] != self.num_features:
            raise self._error(f"expects input shape ({self.num_features}, H, W), got "
                              f"{tuple(shape)}")
        return shape


class BatchNorm1D(_BatchNorm):
    """Over vectors (features,): per feature, statistics over the batch."""

    def compute_output_shape(self, shape):
        if tuple(shape) != (self.num_features,):
            raise self._error(f"expects input shape ({self.num_features},), got {tuple(shape)}")
        return shape
