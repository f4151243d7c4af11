"""Inference on numpy inputs (Runtime.forward, Runtime.predict): the device it runs on, a
model's logits in batches of one executor's size, and the probabilities its loss stands for,
which the forward pass leaves out (softmax for softmax_ce, the logistic function for
sigmoid_bce)."""
import numpy as np

# Without a measured speed, inference prefers a device of an earlier kind here (device_profile
# kinds): a discrete GPU or accelerator over an integrated GPU over a CPU.
KIND_ORDER = ("dgpu", "accelerator", "igpu", "cpu")
_KIND_RANK = {kind: rank for rank, kind in enumerate(KIND_ORDER)}  # a kind not listed: last


def inference_device(devices, failed, speeds):
    """Of the devices whose positions are not in `failed`, where single-device work
    (evaluation, prediction) runs: the fastest by the scheduler's measured samples/s (`speeds`,
    None where not measured) where every one left is measured, else the first of the earliest
    kind in KIND_ORDER - so that with `--devices all` it is not the CPU because its OpenCL
    platform happens to be listed first."""
    alive = [i for i in range(len(devices)) if i not in failed]
    if all(speeds[i] is not None for i in alive):
        return devices[max(alive, key=lambda i: (speeds[i], -i))]
    last = len(KIND_ORDER)
    return devices[min(alive, key=lambda i: (_KIND_RANK.get(devices[i].profile["kind"], last),
                                             i))]


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
