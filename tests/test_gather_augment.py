"""The gather kernel's augmentation (random crop with zero padding, horizontal flip) against its
numpy reference (hetcl/codegen/probes/augment.py) on every device, bit for bit: with mean 0 and
std 1/255 the kernel's x is the uint8 pixel itself. Keys differ from indices, batches are
partial (count < batch) and labels uint8 or int32 past 255. The draws depend on (seed, epoch,
key) only: a batch gathered in two halves (also from a row offset) equals it gathered whole. Outputs are NaN / -7
poisoned before each run, so an element the kernel misses cannot pass."""
import numpy as np
import pytest

from hetcl.backend.buffers import empty, to_device
from hetcl.codegen import prover
from hetcl.codegen.gather import Gather, GatherParams
from hetcl.codegen.probes import augment
from hetcl.codegen.probes.augment import augment_draws, augment_reference
from hetcl.codegen.render import render

MEAN, STD = 0.0, 1 / 255   # x = v*1 + (-0): the pixel exactly
BATCH, COUNT = 13, 11
ODD = (2, 5, 7)
# (sample shape, pad, flip, label type): every shape, pad 0, 1 and 4, flip on and off, and the
# plain kernel (pad 0, no flip) once
CASES = [((1, 28, 28), 4, True, np.uint8), ((3, 32, 32), 4, True, np.int32),
         (ODD, 1, True, np.uint8), (ODD, 4, False, np.int32), (ODD, 0, True, np.int32),
         ((3, 32, 32), 1, False, np.uint8), ((1, 28, 28), 0, False, np.int32)]


def dataset(rng, shape, label_type, n=40):
    images = rng.integers(0, 256, (n,) + shape, dtype=np.uint8)
    high = 5000 if label_type == np.int32 else 256   # int32 labels past a byte's range
    return images, rng.integers(0, high, n).astype(label_type)


def batch_of(rng, n, batch=BATCH):
    """indices (a repeat, the first and last image) and keys unlike them (as a streamed set's)"""
    indices = rng.integers(0, n, batch).astype(np.int32)
    indices[:3] = (n - 1, 0, n - 1)
    keys = rng.integers(0, 2 ** 31 - 1, batch).astype(np.int32)
    keys[-1] = 2 ** 31 - 1
    return indices, keys


def run(gather, images, labels, indices, keys=None, count=None, seed=0, epoch=0, first=0):
    device, batch = gather.device, gather.batch
    x = empty(device, (batch, gather.sample_size)).fill(np.nan)
    y = empty(device, (batch,), np.int32).fill(-7)
    gather(to_device(device, images), to_device(device, labels), to_device(device, indices),
           x, y, count=count, keys=None if keys is None else to_device(device, keys),
           seed=seed, epoch=epoch, first=first).wait()
    return x.get(), y.get()


def check(gather, images, labels, indices, keys, count, seed, epoch):
    x, y = run(gather, images, labels, indices, keys, count, seed, epoch)
    ref = augment_reference(images, indices[:count], keys[:count], seed, epoch, gather.pad,
                            gather.flip)
    where = (images.shape[1:], gather.pad, gather.flip, str(gather.params), seed, epoch)
    assert np.array_equal(x[:count], ref.reshape(count, -1).astype(np.float32)), where
    assert np.array_equal(y[:count], labels[indices[:count]].astype(np.int32)), where
    assert np.isnan(x[count:]).all() and (y[count:] == -7).all(), where   # rows past count
    return x[:count]


@pytest.mark.parametrize("shape,pad,flip,label_type", CASES,
                         ids=[f"{'x'.join(map(str, c[0]))}-pad{c[1]}-flip{int(c[2])}-"
                              f"{np.dtype(c[3]).name}" for c in CASES])
def test_gather_augment_matches_reference(device, shape, pad, flip, label_type):
    rng = np.random.default_rng(pad * 10 + flip)
    images, labels = dataset(rng, shape, label_type)
    indices, keys = batch_of(rng, len(images))
    gather = Gather(device, BATCH, shape, MEAN, STD, pad=pad, flip=flip, label_type=label_type)
    check(gather, images, labels, indices, keys, COUNT, seed=2 ** 40 + 7, epoch=3)


def test_gather_augment_params_from_space(device):
    rng = np.random.default_rng(5)
    images, labels = dataset(rng, ODD, np.uint8)
    indices, keys = batch_of(rng, len(images))
    picks = [GatherParams(WG=16, WPT=1, VW=1), GatherParams(WG=32, WPT=4, VW=8),
             GatherParams(WG=128, WPT=2, VW=16)]   # 70 elements: partial last units for VW > 1
    assert all(p in GatherParams.valid_space(device.features) for p in picks)
    for p in picks:
        gather = Gather(device, BATCH, ODD, MEAN, STD, params=p, pad=4, flip=True)
        check(gather, images, labels, indices, keys, COUNT, seed=1, epoch=0)


def test_gather_augment_draws_depend_on_seed_epoch_and_key_only(device):
    rng = np.random.default_rng(6)
    images, labels = dataset(rng, ODD, np.uint8)
    indices, keys = batch_of(rng, len(images))
    whole = Gather(device, BATCH, ODD, MEAN, STD, pad=1, flip=True)
    x = check(whole, images, labels, indices, keys, 12, seed=9, epoch=2)
    # halves: another batch size, each sample at another row than in the whole batch
    half = Gather(device, 6, ODD, MEAN, STD, pad=1, flip=True)
    parts = [run(half, images, labels, indices[k:k + 6], keys[k:k + 6], seed=9, epoch=2)[0]
             for k in (0, 6)]
    assert np.array_equal(np.concatenate(parts), x)
    # the halves again, read from the whole batch's indices and keys at a row offset (first)
    parts = [run(half, images, labels, indices, keys, seed=9, epoch=2, first=k)[0]
             for k in (0, 6)]
    assert np.array_equal(np.concatenate(parts), x)
    # another epoch or seed: other draws (each still the reference's)
    assert not np.array_equal(check(whole, images, labels, indices, keys, 12, 9, 3), x)
    assert not np.array_equal(check(whole, images, labels, indices, keys, 12, 10, 2), x)


def test_augment_draws_cover_every_offset_and_flip():
    keys = np.arange(4000)
    for pad in (1, 4):
        dy, dx, mirror = augment_draws(keys, 0, 0, pad)
        offsets = set(range(2 * pad + 1))
        assert set(dy.tolist()) == offsets and set(dx.tolist()) == offsets
        assert 0.45 < mirror.mean() < 0.55
    dy0, dx0, flip0 = augment_draws(keys, 0, 0, 4)
    for seed, epoch in ((0, 1), (1, 0)):
        dy, dx, mirror = augment_draws(keys, seed, epoch, 4)
        assert (dy != dy0).mean() > 0.5 and (dx != dx0).mean() > 0.5
        assert (mirror != flip0).mean() > 0.3
    assert not augment_draws(keys, 0, 0, 0)[0].any()   # pad 0: no shift


def test_augment_reference_is_pad_crop_then_flip():
    """The vectorised reference against the transforms written out one sample at a time."""
    rng = np.random.default_rng(7)
    images = rng.integers(0, 256, (6, 2, 5, 7), dtype=np.uint8)
    indices, keys = np.array([5, 0, 3, 3]), np.array([11, 2, 3, 2 ** 31 - 1])
    for pad, flip in ((0, True), (3, False), (3, True)):
        got = augment_reference(images, indices, keys, 4, 1, pad, flip)
        dy, dx, mirror = augment_draws(keys, 4, 1, pad)
        for b, i in enumerate(indices):
            crop = np.pad(images[i], ((0, 0), (pad, pad), (pad, pad)))[:, dy[b]:dy[b] + 5,
                                                                         dx[b]:dx[b] + 7]
            assert np.array_equal(got[b], crop[..., ::-1] if flip and mirror[b] else crop)


def test_gather_plain_path_unchanged(device):
    """No augmentation: the plain kernel's context (batch, s) and source, no Philox, no keys,
    whatever the keys, seed or epoch."""
    plain = Gather(device, BATCH, (1, 28, 28), MEAN, STD)
    assert plain.context == {"batch": BATCH, "s": 784}
    source = render("gather.cl.mako", plain.params, features=device.features, **plain.context)
    assert "0xD2511F53" not in source and "keys" not in source
    rng = np.random.default_rng(8)
    images, labels = dataset(rng, (1, 28, 28), np.uint8)
    indices, keys = batch_of(rng, len(images))
    x, _ = run(plain, images, labels, indices, keys, seed=3, epoch=4)
    assert np.array_equal(x, images[indices].reshape(BATCH, -1).astype(np.float32))


def test_gather_probe_plain_and_augmented(device):
    """probes/augment.py's gather probe (what the prover runs) passes for both kernels."""
    params = GatherParams.defaults(device.features)
    for context in ({"batch": BATCH, "s": 784, "label_type": "int"},
                    {"batch": BATCH, "s": 70, "h": 5, "w": 7, "pad": 1, "flip": True}):
        assert augment.gather(device, params, **context) <= prover.TOLERANCE, context


def test_gather_augment_checks_arguments(device):
    with pytest.raises(ValueError, match=r"needs sample_shape \(C, H, W\)"):
        Gather(device, 4, 35, MEAN, STD, pad=1)
    with pytest.raises(ValueError, match="label_type must be uint8 or int32"):
        Gather(device, 4, ODD, MEAN, STD, label_type=np.int64)
    with pytest.raises(ValueError, match="pad=-1"):
        Gather(device, 4, ODD, MEAN, STD, pad=-1, flip=True)
    gather = Gather(device, BATCH, ODD, MEAN, STD, pad=1, flip=True)
    images = to_device(device, np.zeros((6,) + ODD, np.uint8))
    labels = to_device(device, np.zeros(6, np.uint8))
    indices = to_device(device, np.zeros(BATCH, np.int32))
    x, y = empty(device, (BATCH, 70)), empty(device, (BATCH,), np.int32)
    with pytest.raises(ValueError, match="keys must be int32"):
        gather(images, labels, indices, x, y, keys=to_device(device, np.zeros(BATCH, np.int64)))
    with pytest.raises(ValueError, match="labels must be uint8"):
        gather(images, to_device(device, np.zeros(6, np.int32)), indices, x, y)
    with pytest.raises(ValueError, match="epoch=-1"):
        gather(images, labels, indices, x, y, epoch=-1)
