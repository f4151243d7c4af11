"""Plain numpy forward and backward of every layer, written from the equations (not from the
kernels), in whatever precision the inputs have. tests/test_reference.py checks each backward
against finite differences in float64.

Layouts: images NCHW; conv weights [F, C, KH, KW]; dense weights [out, in] (y = x W^T + b), as
PyTorch stores them. Losses are sums over the rows given divided by ``global_n`` (the size of the
whole mini-batch), so shards of one batch add up exactly.
"""
import numpy as np


def dense_fwd(x, w, b):
    return x @ w.T + b


def dense_bwd(x, w, dy):
    """-> dx, dw, db"""
    return dy @ w, dy.T @ x, dy.sum(axis=0)


def conv_out_size(size, k, stride, pad):
    return (size + 2 * pad - k) // stride + 1


def _pad(x, ph, pw):
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def conv2d_fwd(x, w, b, stride=(1, 1), pad=(0, 0)):
    n, c, h, wd = x.shape
    f, _, kh, kw = w.shape
    sh, sw = stride
    oh, ow = conv_out_size(h, kh, sh, pad[0]), conv_out_size(wd, kw, sw, pad[1])
    xp = _pad(x, *pad)
    y = np.zeros((n, f, oh, ow), dtype=np.result_type(x, w))
    # out[n,f,i,j] = sum_{c,p,q} xp[n,c,i*sh+p,j*sw+q] * w[f,c,p,q]
    for p in range(kh):
        for q in range(kw):
            window = xp[:, :, p:p + sh * (oh - 1) + 1:sh, q:q + sw * (ow - 1) + 1:sw]
            y += np.einsum("nchw,fc->nfhw", window, w[:, :, p, q])
    return y + b.reshape(1, f, 1, 1)


def conv2d_bwd(x, w, dy, stride=(1, 1), pad=(0, 0)):
    """-> dx, dw, db"""
    f, _, kh, kw = w.shape
    sh, sw = stride
    oh, ow = dy.shape[2:]
    xp = _pad(x, *pad)
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    for p in range(kh):
        for q in range(kw):
            rows = slice(p, p + sh * (oh - 1) + 1, sh)
            cols = slice(q, q + sw * (ow - 1) + 1, sw)
            dxp[:, :, rows, cols] += np.einsum("nfhw,fc->nchw", dy, w[:, :, p, q])
            dw[:, :, p, q] = np.einsum("nfhw,nchw->fc", dy, xp[:, :, rows, cols])
    h, wd = x.shape[2:]
    dx = dxp[:, :, pad[0]:pad[0] + h, pad[1]:pad[1] + wd]
    return dx, dw, dy.sum(axis=(0, 2, 3))


def maxpool_fwd(x, size=(2, 2), stride=None):
    """-> y, argmax (flat index into each H*W plane). Ties: the first maximum in row-major order
    of the window wins."""
    stride = stride or size
    n, c, h, w = x.shape
    oh, ow = (h - size[0]) // stride[0] + 1, (w - size[1]) // stride[1] + 1
    y = np.full((n, c, oh, ow), -np.inf, dtype=x.dtype)
    arg = np.zeros((n, c, oh, ow), dtype=np.int64)
    for p in range(size[0]):
        for q in range(size[1]):
            rows = np.arange(oh) * stride[0] + p
            cols = np.arange(ow) * stride[1] + q
            v = x[:, :, rows[:, None], cols[None, :]]
            better = v > y  # strict: an equal later value does not replace the first
            y = np.where(better, v, y)
            arg = np.where(better, rows[:, None] * w + cols[None, :], arg)
    return y, arg


def maxpool_bwd(x_shape, arg, dy):
    n, c, h, w = x_shape
    dx = np.zeros((n, c, h * w), dtype=dy.dtype)
    flat_arg = arg.reshape(n, c, -1)
    flat_dy = dy.reshape(n, c, -1)
    for i in range(flat_arg.shape[2]):  # overlapping windows add up
        np.add.at(dx, (np.arange(n)[:, None], np.arange(c)[None, :], flat_arg[:, :, i]),
                  flat_dy[:, :, i])
    return dx.reshape(x_shape)


def relu_fwd(x):
    return np.maximum(x, 0)


def relu_bwd(y, dy):
    return dy * (y > 0)


def sigmoid_fwd(x):
    return np.where(x >= 0, 1 / (1 + np.exp(-np.abs(x))), np.exp(-np.abs(x)) / (1 + np.exp(-np.abs(x))))


def sigmoid_bwd(y, dy):
    return dy * y * (1 - y)


def one_hot(labels, classes, dtype=np.float64):
    out = np.zeros((len(labels), classes), dtype=dtype)
    out[np.arange(len(labels)), labels] = 1
    return out


def softmax_ce(logits, labels, global_n):
    """-> loss (sum over rows / global_n), dlogits = (softmax - onehot) / global_n"""
    z = logits - logits.max(axis=1, keepdims=True)
    lse = np.log(np.exp(z).sum(axis=1, keepdims=True))
    logp = z - lse
    t = one_hot(labels, logits.shape[1], logits.dtype)
    loss = -(logp * t).sum() / global_n
    return loss, (np.exp(logp) - t) / global_n


def sigmoid_bce(logits, labels, global_n):
    """Binary cross-entropy of sigmoid(logits) against one-hot targets, in the stable form
    max(z, 0) - z*t + log(1 + exp(-|z|)). -> loss, dlogits = (sigmoid(z) - t) / global_n"""
    t = one_hot(labels, logits.shape[1], logits.dtype)
    z = logits
    loss = (np.maximum(z, 0) - z * t + np.log1p(np.exp(-np.abs(z)))).sum() / global_n
    return loss, (sigmoid_fwd(z) - t) / global_n


def sgd_step(p, g, v, lr, momentum=0.0, weight_decay=0.0, nesterov=False):
    """PyTorch's SGD: d = g + wd*p; v = momentum*v + d; step = d + momentum*v (Nesterov) or v.
    -> new p, new v"""
    d = g + weight_decay * p
    v = momentum * v + d
    step = d + momentum * v if nesterov else v
    return p - lr * step, v


def he_normal_std(fan_in):
    return np.sqrt(2.0 / fan_in)
