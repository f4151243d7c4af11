"""Inference on numpy inputs (Runtime.forward, Runtime.predict): a model's logits in batches of
one executor's size, and the probabilities its loss stands for, which the forward pass leaves
out (softmax for softmax_ce, the logistic function for sigmoid_bce)."""
import numpy as np


def logits_in_batches(ex, x):
    """Logits of float32 x [N, ...] on the executor ex, in evaluation mode; the last batch is
    padded with zeros (no new kernels for one odd size)."""
    n, outs = ex.n, []
    for start in range(0, len(x), n):
        chunk = x[start:start + n]
        if len(chunk) < n:
            chunk = np.concatenate([chunk, np.zeros((n - len(chunk),) + chunk.shape[1:],
                                                    np.float32)])
        outs.append(ex.forward(chunk).get()[:len(x) - start])
    return np.concatenate(outs)


def probabilities(logits, loss):
    """float32 [N, classes] of logits, computed in float64: each row's softmax (softmax_ce,
    rows sum to 1) or each logit's sigmoid (sigmoid_bce, classes independent)."""
    z = np.asarray(logits, np.float64)
    if loss == "sigmoid_bce":
        return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
