"""Checks of what the Python API is given, made on the host before any kernel runs.

The kernels take labels and indices as addresses: a label outside the model's classes reads
another row's logits (a wrong loss) or memory far past the buffer (a crash), an index outside
the data set gathers whatever lies there, and float images cast to uint8 for upload become
zeros. So the runtime's entry points (runtime.py, resident_sets.py) call these first; each
raises a one-line ShapeError or InputError that says what was wrong and what to do.
"""
import numpy as np

from ..errors import InputError, ShapeError


def scale_shift(mean, std):
    """(scale, shift) float32 of the pixel normalisation x = v*scale + shift == (v/255 -
    mean)/std: folded in float64, each rounded once to float32 - what the gather kernel does
    on the device and what exported models and `hetcl predict` do, so all see the same x."""
    return np.float32(1.0 / (255.0 * float(std))), np.float32(-float(mean) / float(std))


def normalised(pixels, mean, std):
    """float32 x of uint8 pixels (any shape), as the gather kernel computes it."""
    scale, shift = scale_shift(mean, std)
    return np.asarray(pixels, np.float32) * scale + shift


def classes(model):
    """The model's class count: the width of its output, which its loss op takes."""
    return int(model.nodes[model.output_node].shape[0])


def _num(v):
    """A label or index value for a message: 3 rather than 3.0 or np.int64(3)."""
    v = v.item() if hasattr(v, "item") else v
    return int(v) if isinstance(v, float) and v.is_integer() else v


def check_sample_shape(model, shape, what):
    """Builds the model for samples of `shape` (the shape of one of `what`), unless it was
    built or declared for another shape."""
    shape, want = tuple(int(s) for s in shape), getattr(model, "input_shape", None)
    if want is not None and shape != tuple(want):
        raise ShapeError(f"the samples of {what} have shape {shape} but the model takes "
                         f"{tuple(want)}: pass an array [n, {', '.join(map(str, want))}]")
    model.build(shape)


def batch(model, x):
    """x as float32 [n, *the model's input shape] (n >= 1); builds the model for it."""
    try:
        x = np.asarray(x, np.float32)
    except (TypeError, ValueError) as e:
        raise InputError(f"x must be a numeric array [n, *input shape]: {e}") from None
    if x.ndim < 2 or len(x) == 0:
        raise ShapeError(f"x must be a non-empty batch [n, *input shape]; got shape {x.shape}")
    check_sample_shape(model, x.shape[1:], "x")
    return x


def check_finite(x):
    # A NaN or inf sample makes the whole batch's loss and gradients NaN, and the update
    # then spoils every parameter.
    if not np.isfinite(x).all():
        bad = int(np.flatnonzero(~np.isfinite(x).reshape(len(x), -1).all(axis=1))[0])
        raise InputError(f"x holds NaN or inf (first in sample {bad}): clean or normalise "
                         f"the batch before training on it")


def label_range(labels, n):
    """(min, max) of `labels` after checking they are n whole numbers: integers, or floats
    with integral values (a float label with a fraction is no class)."""
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != n:
        hint = ": one-hot? pass y.argmax(1)" if y.ndim == 2 else ""
        raise ShapeError(f"labels must be a 1-D array of {n} class indices, one per sample; "
                         f"got shape {y.shape}{hint}")
    if y.dtype.kind == "f":
        bad = np.flatnonzero(y != np.floor(y))  # NaN too: it equals nothing
        if bad.size:
            raise InputError(f"labels must be class indices (integers, or floats with integral "
                             f"values); got {y[bad[0]]} at position {bad[0]}")
    elif y.dtype.kind not in "iu":
        raise InputError(f"labels must be class indices (integers, or floats with integral "
                         f"values); got dtype {y.dtype}")
    return (_num(y.min()), _num(y.max())) if n else (0, 0)


def check_label_range(lo, hi, n_classes):
    if lo < 0 or hi >= n_classes:
        raise InputError(f"labels must be class indices in [0, {n_classes}) for this model "
                         f"(its output width); got values from {lo} to {hi}")


def check_labels(model, labels, n):
    """The numpy path's labels: n class indices of the model."""
    check_label_range(*label_range(labels, n), classes(model))


def check_images(images):
    """The resident path's images: uint8 pixels [n, ...] with n >= 1, as hetcl.training.data loads them
    (the gather kernel normalises them on the device; a float array would become zeros)."""
    dtype = images.dtype if hasattr(images, "dtype") else np.asarray(images).dtype
    if dtype != np.uint8:
        raise InputError(f"images must be uint8 pixels (0..255) as hetcl.training.data loads them, "
                         f"with mean/std for the normalisation; got {dtype}: use train_step "
                         f"for float batches")
    shape = np.shape(images)
    if len(shape) < 2 or shape[0] == 0:
        raise ShapeError(f"images must be a non-empty array [n, *sample shape]; got shape "
                         f"{shape}")


def indices(idx, n):
    """idx as int32 sample numbers of a data set of n: a non-empty 1-D integer array with
    values in [0, n)."""
    a = np.asarray(idx)
    if a.ndim != 1 or a.size == 0:
        raise ShapeError(f"indices must be a non-empty 1-D array of sample numbers; got shape "
                         f"{a.shape}")
    if a.dtype.kind not in "iu":  # a bool mask would pass as indices 0 and 1
        raise InputError(f"indices must be integers (sample numbers); got dtype {a.dtype}")
    lo, hi = _num(a.min()), _num(a.max())
    if lo < 0 or hi >= n:
        raise InputError(f"indices must be in [0, {n}) for this data set of {n} samples; got "
                         f"values from {lo} to {hi}")
    return a.astype(np.int32)
