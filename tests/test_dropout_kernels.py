"""Dropout kernels (kernels/dropout.cl.mako) on every device: the numpy Philox4x32-10 against
Random123's known answers; forward and backward against the numpy reference (the mask bit for
bit, the values within 1e-6) at odd shapes, shards that start mid-block and counters past 2^32;
the kept fraction; a shard's mask equal to its rows of the whole batch's (N devices == 1); a
new step, seed or layer drawing a new mask; every tuning point; the prover's probe. Outputs
start poisoned (NaN), so a missed element cannot pass."""
import numpy as np
import pytest

from hetcl.backend.buffers import empty, to_device
from hetcl.codegen.dropout import DropoutBwd, DropoutFwd, DropoutParams
from hetcl.codegen.probes.dropout import dropout, dropout_mask, dropout_reference, philox4x32

TOL = 1e-6
KEY = (0x12345678, 3)   # (seed_lo, seed_hi): a run's seed and a layer's id

# Random123 kat_vectors, philox4x32 10 rounds: (counter, key, output)
KAT = [((0, 0, 0, 0), (0, 0), (0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8)),
       ((0xffffffff,) * 4, (0xffffffff,) * 2, (0x408f276d, 0x41c83b0e, 0xa20bc7c6, 0x6d5451fd)),
       ((0x243f6a88, 0x85a308d3, 0x13198a2e, 0x03707344), (0xa4093822, 0x299f31d0),
        (0xd16cfe09, 0x94fdcceb, 0x5001e420, 0x24126ea1))]

SHAPES = [(7, 3 * 5 * 5), (1, 13), (7, 1)]
BOTH = (DropoutFwd, DropoutBwd)


def rel(a, b):
    return float(np.abs(a - b).max() / max(1.0, np.abs(b).max()))


def data(n, f, seed=0):
    x = np.random.default_rng(seed).standard_normal((n, f)).astype(np.float32)
    assert np.all(x != 0)   # so that y != 0 is the mask
    return x


def run(device, cls, n, f, p, x, step=5, offset=0, key=KEY, params=None):
    """The kernel's output for input x; the output poisoned first."""
    out = empty(device, (n, f)).fill(np.nan)
    cls(device, n, f, p, params=params)(to_device(device, x), out, *key, step, offset)
    return out.get()


def check(device, n, f, p, step=5, offset=0, key=KEY, params=None, kernels=BOTH):
    """Forward (input x) and backward (input dy) against numpy: the mask bit for bit (the same
    for both), the values within TOL. -> the kernels' mask."""
    keep = dropout_mask(*key, step, offset, n, f, p)
    for seed, cls in enumerate(kernels):
        x = data(n, f, seed)
        y = run(device, cls, n, f, p, x, step, offset, key, params)
        assert np.array_equal(y != 0, keep), (cls.kernel, params)
        assert rel(y, dropout_reference(x, keep, p)) < TOL, (cls.kernel, params)
    return y != 0


@pytest.mark.parametrize("counter,key,expected", KAT)
def test_philox_known_answers(counter, key, expected):
    assert tuple(int(v) for v in philox4x32(counter, key)) == expected


def test_numpy_mask_is_the_documented_draw():
    """Element g of the batch takes word g % 4 of Philox((g // 4, 0, step, 0), key)."""
    n, f, p, step, offset = 3, 7, 0.5, 9, 2
    keep = dropout_mask(*KEY, step, offset, n, f, p)
    for r in range(n):
        for j in range(f):
            g = (offset + r) * f + j
            word = int(philox4x32((g // 4, 0, step, 0), KEY)[g % 4])
            assert keep[r, j] == ((word >> 8) / 2.0 ** 24 >= p)


@pytest.mark.parametrize("p", [0.0, 0.1, 0.5])
@pytest.mark.parametrize("n,f", SHAPES)
def test_dropout_kernels_match_numpy(device, n, f, p):
    check(device, n, f, p)
    check(device, n, f, p, step=6, offset=3)            # a shard that starts mid-block
    check(device, n, f, p, offset=2 ** 32 - 8)          # counters past 2^32 (high word)


def test_dropout_in_place(device):
    n, f, p = 7, 75, 0.5
    x = data(n, f)
    keep = dropout_mask(*KEY, 5, 1, n, f, p)
    for cls in (DropoutFwd, DropoutBwd):
        buf = to_device(device, x)
        cls(device, n, f, p)(buf, buf, *KEY, 5, 1)
        assert rel(buf.get(), dropout_reference(x, keep, p)) < TOL


def test_dropout_propagates_nan(device):
    x = np.full((3, 13), np.nan, np.float32)
    y = empty(device, x.shape).fill(0)
    DropoutFwd(device, 3, 13, 0.5)(to_device(device, x), y, *KEY, 0, 0)
    assert np.isnan(y.get()).all()   # as PyTorch: x * 0 for a dropped element


@pytest.mark.parametrize("p", [0.1, 0.5, 0.9])
def test_kept_fraction(device, p):
    """The kept fraction is 1 - p within 5 sigma, overall and for each of Philox's 4 words."""
    n, f = 64, 4096
    y = run(device, DropoutFwd, n, f, p, np.ones((n, f), np.float32))
    kept = (y != 0).reshape(-1, 4)
    for sample in (kept, *(kept[:, w] for w in range(4))):
        sigma = np.sqrt(p * (1 - p) / sample.size)
        assert abs(sample.mean() - (1 - p)) < 5 * sigma
    assert np.all(y[y != 0] == np.float32(1 / (1 - p)))


def test_shard_mask_equals_the_whole_batch_rows(device):
    """Rows a..b drawn as a shard with offset a == rows a..b of the whole batch's mask: any
    split of the batch over devices draws the mask of one device."""
    n, f, p = 9, 75, 0.5
    whole = check(device, n, f, p, kernels=BOTH[:1])
    for a, b in [(0, 4), (4, 9), (3, 5), (8, 9), (1, 8)]:
        shard = check(device, b - a, f, p, offset=a, kernels=BOTH[:1])
        assert np.array_equal(shard, whole[a:b]), (a, b)


def test_new_step_seed_or_layer_draws_a_new_mask(device):
    n, f, p = 7, 75, 0.5
    base = check(device, n, f, p)
    for step, key in [(6, KEY), (5, (KEY[0] + 1, KEY[1])), (5, (KEY[0], KEY[1] + 1))]:
        other = check(device, n, f, p, step=step, key=key)
        assert (other != base).mean() > 0.3, (step, key)   # 0.5 expected


def test_dropout_every_tuning_point(device):
    n, f, p = 9, 37, 0.5
    space = DropoutParams.valid_space(device.features)
    assert len(space) == 25
    for i, params in enumerate(space):   # (the backward is the forward's code: every 4th)
        check(device, n, f, p, offset=3, params=params, kernels=BOTH[:1 + (i % 4 == 0)])


def test_dropout_probe_passes_the_default_variant(device):
    params = DropoutParams.defaults(device.features)
    for kernel in ("dropout_fwd", "dropout_bwd"):
        for p in (0.0, 0.5):
            assert dropout(device, params, kernel, n=7, f=75, p=p) < 1e-6


def test_dropout_checks_its_shape(device):
    for n, f, p in [(0, 3, 0.5), (2, 0, 0.5), (2, 3, 1.0), (2, 3, -0.1)]:
        with pytest.raises(ValueError):
            DropoutFwd(device, n, f, p)
