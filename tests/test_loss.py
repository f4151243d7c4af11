"""Fused softmax + cross-entropy and sigmoid + binary cross-entropy against tests/reference.py on
every device: int and uchar labels read from an offset, a shard of a larger batch (global_n !=
n), huge logits, ties in the argmax, several parameter sets. Outputs are poisoned first."""
import numpy as np
import pytest

import reference as R
from hetcl.backend.buffers import empty, to_device
from hetcl.codegen.loss import LABEL_TYPES, LossParams, SigmoidBCE, SoftmaxCE

TOL = 1e-4
LOSSES = {SoftmaxCE: R.softmax_ce, SigmoidBCE: R.sigmoid_bce}
# One work-item per row; 4 per row with a partial last group of rows (56 % 16); 32 per row, more
# than the 10 classes (idle work-items in the trees); 2 per row in one 64-row group.
PICKS = [LossParams(1, 4), LossParams(4, 16), LossParams(32, 4), LossParams(2, 64)]


def rel_err(x, ref):
    return np.linalg.norm(x - ref) / max(np.linalg.norm(ref), 1e-30)


def batch(rng, n, classes, batch_n, off):
    """A shard of n rows at row `off` of a batch of batch_n labels, with rows that stress the
    kernel: huge logits, ties for the max (the first one must win), all-equal rows."""
    logits = (rng.standard_normal((n, classes)) * 3).astype(np.float32)
    labels = rng.integers(0, classes, batch_n)
    shard = labels[off:off + n]  # a view: edits below land in `labels`
    rows = iter(range(n))
    for _ in range(n // 3):  # about a third of the rows are predicted right
        i = next(rows)
        shard[i] = logits[i].argmax()
    if n >= 8 and classes >= 3:
        logits[n - 1] = 0.0  # all equal: argmax is class 0
        shard[n - 1] = 0
        logits[n - 2] = 0.0  # all equal, label elsewhere: wrong
        shard[n - 2] = classes - 1
        logits[n - 3, :] = -1.0
        logits[n - 3, [1, 2]] = 5.0  # tie between 1 and 2, label the second: wrong
        shard[n - 3] = 2
        logits[n - 4, :] = -1.0
        logits[n - 4, [1, 2]] = 5.0  # the same tie, label the first: right
        shard[n - 4] = 1
        logits[n - 5] = np.linspace(-1e4, 1e4, classes)  # huge: exp must not overflow
        logits[n - 6] = -np.linspace(-1e4, 1e4, classes)
        shard[n - 6] = classes - 1  # confidently wrong: a loss of about 2e4
    return logits, labels


def reference(cls, logits, labels, global_n):
    z = logits.astype(np.float64)
    loss_fn = LOSSES[cls]
    row_loss = np.array([loss_fn(z[i:i + 1], labels[i:i + 1], global_n)[0]
                         for i in range(len(z))])
    _, dlogits = loss_fn(z, labels, global_n)
    correct = (np.argmax(logits, axis=1) == labels).astype(np.int32)
    return dlogits, row_loss, correct


def run(device, cls, logits, labels, off, global_n, label_type, params=None):
    n, classes = logits.shape
    op = cls(device, n, classes, label_type=label_type, params=params)
    dlogits = empty(device, (n, classes)).fill(np.nan)
    row_loss = empty(device, (n,)).fill(np.nan)
    row_correct = empty(device, (n,), np.int32).fill(-7)
    labels_d = to_device(device, labels.astype(LABEL_TYPES[label_type]))
    op(to_device(device, logits), labels_d, dlogits, row_loss, row_correct, global_n,
       labels_off=off).wait()
    return dlogits.get(), row_loss.get(), row_correct.get()


def check(cls, logits, labels, off, global_n, out):
    n = len(logits)
    ref_d, ref_loss, ref_correct = reference(cls, logits, labels[off:off + n], global_n)
    dlogits, row_loss, row_correct = out
    assert np.isfinite(dlogits).all() and np.isfinite(row_loss).all()
    assert rel_err(dlogits, ref_d) < TOL, rel_err(dlogits, ref_d)
    assert rel_err(row_loss, ref_loss) < TOL, rel_err(row_loss, ref_loss)
    assert np.array_equal(row_correct, ref_correct), (row_correct, ref_correct)


# (n, classes, batch size = global_n, labels_off): a 56-row shard of a 256 batch; a whole batch
# of 13 with 3 classes; one row.
CASES = [(56, 10, 256, 100), (13, 3, 13, 0), (1, 10, 4, 3)]


@pytest.mark.parametrize("label_type", list(LABEL_TYPES))
@pytest.mark.parametrize("cls", list(LOSSES), ids=lambda c: c.__name__)
def test_loss_default_params(device, cls, label_type):
    rng = np.random.default_rng(0)
    for n, classes, batch_n, off in CASES[:2] if label_type == "int" else CASES[::2]:
        logits, labels = batch(rng, n, classes, batch_n, off)
        out = run(device, cls, logits, labels, off, batch_n, label_type)
        check(cls, logits, labels, off, batch_n, out)


@pytest.mark.parametrize("cls", list(LOSSES), ids=lambda c: c.__name__)
def test_loss_param_sets(device, cls):
    rng = np.random.default_rng(1)
    space = LossParams.space(device.features)
    skip = list(LOSSES).index(cls)  # each loss runs three of the four (plus the defaults)
    for i, p in enumerate(PICKS):
        assert p in space and p.valid(device.features)
        if i == skip:
            continue
        n, classes, batch_n, off = CASES[0]
        logits, labels = batch(rng, n, classes, batch_n, off)
        label_type = list(LABEL_TYPES)[i % 2]
        out = run(device, cls, logits, labels, off, batch_n, label_type, params=p)
        check(cls, logits, labels, off, batch_n, out)


def test_shards_add_up_to_the_batch(device):
    """Two uneven shards with global_n = the batch size give the batch's loss and gradient."""
    rng = np.random.default_rng(2)
    logits, labels = batch(rng, 56, 10, 56, 0)
    whole = run(device, SoftmaxCE, logits, labels, 0, 56, "int")
    first = run(device, SoftmaxCE, logits[:13], labels, 0, 56, "int")
    second = run(device, SoftmaxCE, logits[13:], labels, 13, 56, "int")
    assert abs(first[1].sum() + second[1].sum() - whole[1].sum()) < 1e-5 * abs(whole[1].sum())
    assert np.allclose(np.concatenate([first[0], second[0]]), whole[0], rtol=0, atol=1e-7)
    assert np.array_equal(np.concatenate([first[2], second[2]]), whole[2])


def test_bad_arguments(device):
    with pytest.raises(ValueError, match="label_type"):
        SoftmaxCE(device, 4, 10, label_type="float")
    with pytest.raises(ValueError, match="power of two"):
        SigmoidBCE(device, 4, 10, params=LossParams(TPR=3, RPG=4))
