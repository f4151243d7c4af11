"""Probes of the convolution data kernels (im2col, col2im, weight flip), max and average
pooling (see the package's docstring)."""
import numpy as np

from ..avgpool import AvgPoolBwd, AvgPoolFwd
from ..conv import Col2Im, Im2Col, WeightFlip, conv_out_hw
from ..pool import MaxPoolBwd, MaxPoolFwd
from . import relative_error


def _taps(kh, kw, sh, sw, oh, ow):
    """(i, j, rows, cols) per kernel tap: the padded-image pixels that tap reads for every
    output pixel, as slices."""
    for i in range(kh):
        for j in range(kw):
            yield i, j, slice(i, i + sh * (oh - 1) + 1, sh), slice(j, j + sw * (ow - 1) + 1, sw)


def _probe_wflip(device, params, rng, c, h, kh, kw):
    from ...backend.buffers import empty, to_device
    weights = rng.standard_normal((c, h, kh, kw)).astype(np.float32)  # c filters, h channels
    wt = empty(device, (h, c * kh * kw)).fill(np.nan)
    WeightFlip(device, c, h, (kh, kw), params=params)(to_device(device, weights), wt)
    return relative_error(wt.get(), weights[:, :, ::-1, ::-1].transpose(1, 0, 2, 3).reshape(h, -1))


def _probe_im2col(device, params, rng, shape, geometry, planes):
    """x read at element offset 3, its plane (n, ch) at n*img_stride + ch*chan_stride."""
    from ...backend.buffers import empty, to_device
    (images, c, h, w), (kh, kw, sh, sw, ph, pw) = shape, geometry
    img_stride, chan_stride = planes or (c * h * w, h * w)
    starts = 3 + np.arange(images)[:, None] * img_stride + np.arange(c) * chan_stride
    flat = rng.standard_normal(int(starts.max()) + h * w).astype(np.float32)
    xp = np.pad(flat[starts[..., None] + np.arange(h * w)].reshape(shape),
                ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    oh, ow = conv_out_hw((h, w), (kh, kw), (sh, sw), (ph, pw))
    ref = np.empty((c, kh, kw, images, oh, ow), np.float32)  # col[ch, i, j][n, oy, ox]
    for i, j, rows, cols in _taps(kh, kw, sh, sw, oh, ow):
        ref[:, i, j] = xp[:, :, rows, cols].transpose(1, 0, 2, 3)
    col = empty(device, (c * kh * kw, images * oh * ow)).fill(np.nan)
    Im2Col(device, (c, h, w), (kh, kw), (sh, sw), (ph, pw), images, params=params,
           planes=planes)(to_device(device, flat), col, x_off=3)
    return relative_error(col.get(), ref.reshape(col.shape))


def _probe_col2im(device, params, rng, shape, geometry):
    """dx written at element offset 3: the sum of the col entries taken from each pixel."""
    from ...backend.buffers import empty, to_device
    (images, c, h, w), (kh, kw, sh, sw, ph, pw) = shape, geometry
    oh, ow = conv_out_hw((h, w), (kh, kw), (sh, sw), (ph, pw))
    col = rng.standard_normal((c, kh, kw, images, oh, ow)).astype(np.float32)
    ref = np.zeros((images, c, h + 2 * ph, w + 2 * pw))
    for i, j, rows, cols in _taps(kh, kw, sh, sw, oh, ow):
        ref[:, :, rows, cols] += col[:, i, j].transpose(1, 0, 2, 3)
    dx = empty(device, (3 + images * c * h * w,)).fill(np.nan)
    Col2Im(device, (c, h, w), (kh, kw), (sh, sw), (ph, pw), images, params=params)(
        to_device(device, col), dx, dx_off=3)
    return relative_error(dx.get()[3:], ref[:, :, ph:ph + h, pw:pw + w].ravel())


def conv(device, params, kernel, c, h, w, kh, kw, sh, sw, ph, pw, images, img_stride=None,
          chan_stride=None):
    """The prover's check of one conv2d.cl.mako variant (prover.py), on the shape it was built
    for: the largest error, relative to the largest magnitude, of im2col's col, col2im's dx or
    wflip's Wt against numpy. Outputs start as NaN, so an element the variant misses shows."""
    rng = np.random.default_rng(0)
    if kernel == "wflip":  # c filters, h channels; w, strides and pads are fixed by WeightFlip
        return _probe_wflip(device, params, rng, c, h, kh, kw)
    shape, geometry = (images, c, h, w), (kh, kw, sh, sw, ph, pw)
    if kernel == "im2col":
        planes = None if img_stride is None else (img_stride, chan_stride)
        return _probe_im2col(device, params, rng, shape, geometry, planes)
    return _probe_col2im(device, params, rng, shape, geometry)


def _maxpool_reference(x, kh, kw, sh, sw):
    """-> y, argmax (flat iy*w + ix in the plane) of x [images, c, h, w]; taps in row-major
    order with a strict '>', so the first of equal maxima wins, as in the template."""
    h, w = x.shape[2:]
    oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
    y = np.full(x.shape[:2] + (oh, ow), -np.inf, x.dtype)
    arg = np.zeros(y.shape, np.int64)
    for i in range(kh):
        for j in range(kw):
            v = x[:, :, i:i + sh * (oh - 1) + 1:sh, j:j + sw * (ow - 1) + 1:sw]
            better = v > y
            y = np.where(better, v, y)
            arg = np.where(better, (np.arange(oh)[:, None] * sh + i) * w +
                           np.arange(ow) * sw + j, arg)
    return y, arg.astype(np.int32)  # the kernel's argmax type


def pool(device, params, kernel, images, c, h, w, kh, kw, sh, sw):
    """The prover's check of one max-pooling variant (prover.py), on the shape it was built
    for: forward, the largest error of y relative to its largest magnitude (inf where an
    argmax differs); backward, that of dx from numpy's argmax. Outputs start poisoned."""
    from ...backend.buffers import empty, to_device
    rng = np.random.default_rng(0)
    x = rng.standard_normal((images, c, h, w)).astype(np.float32)
    y_ref, arg_ref = _maxpool_reference(x, kh, kw, sh, sw)
    if kernel == "maxpool_fwd":
        y = empty(device, y_ref.shape).fill(np.nan)
        arg = empty(device, y_ref.shape, np.int32).fill(-1)
        MaxPoolFwd(device, x.shape, (kh, kw), (sh, sw), params=params)(
            to_device(device, x), y, arg)
        if not np.array_equal(arg.get(), arg_ref):
            return float("inf")
        got, ref = y.get(), y_ref
    else:
        dy = rng.standard_normal(y_ref.shape).astype(np.float32)
        dx = empty(device, x.shape).fill(np.nan)
        MaxPoolBwd(device, x.shape, (kh, kw), (sh, sw), params=params)(
            to_device(device, dy), to_device(device, arg_ref), dx)
        planes = images * c
        ref = np.zeros((planes, h * w))  # overlapping windows add up
        np.add.at(ref, (np.arange(planes)[:, None], arg_ref.reshape(planes, -1)),
                  dy.reshape(planes, -1))
        got = dx.get().reshape(planes, -1)
    return relative_error(got, ref)


def avgpool_reference(x, kh, kw, sh, sw):
    """numpy's average pooling of x [N, C, H, W] (no padding), float64."""
    oh, ow = (x.shape[2] - kh) // sh + 1, (x.shape[3] - kw) // sw + 1
    y = np.zeros(x.shape[:2] + (oh, ow))
    for _, _, rows, cols in _taps(kh, kw, sh, sw, oh, ow):
        y += x[:, :, rows, cols]
    return y / (kh * kw)


def avgpool_grad_reference(dy, in_shape, kh, kw, sh, sw):
    """dx of average pooling: each output's gradient spread evenly over its window."""
    dx = np.zeros(in_shape)
    oh, ow = dy.shape[2:]
    for _, _, rows, cols in _taps(kh, kw, sh, sw, oh, ow):
        dx[:, :, rows, cols] += dy / (kh * kw)
    return dx


def avgpool(device, params, kernel, images, c, h, w, kh, kw, sh, sw):
    """The prover's check of one average-pooling variant, on the shape it was built for: the
    largest error of y (forward) or dx (backward) relative to its largest magnitude. Outputs
    start poisoned."""
    from ...backend.buffers import empty, to_device
    rng = np.random.default_rng(0)
    x = rng.standard_normal((images, c, h, w)).astype(np.float32)
    if kernel == "avgpool_fwd":
        ref = avgpool_reference(x, kh, kw, sh, sw)
        y = empty(device, ref.shape).fill(np.nan)
        AvgPoolFwd(device, x.shape, (kh, kw), (sh, sw), params=params)(to_device(device, x), y)
        return relative_error(y.get(), ref)
    dy = rng.standard_normal((images, c, (h - kh) // sh + 1, (w - kw) // sw + 1))
    dx = empty(device, x.shape).fill(np.nan)
    AvgPoolBwd(device, x.shape, (kh, kw), (sh, sw), params=params)(
        to_device(device, dy.astype(np.float32)), dx)
    return relative_error(dx.get(), avgpool_grad_reference(dy, x.shape, kh, kw, sh, sw))
