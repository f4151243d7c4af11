"""The dataset gather kernel against numpy on every device: random indices with repeats, the
first and last image, partial batches (count < batch), bad indices, ragged row sizes (s % VW
!= 0) and parameter sets from its tuning space. Outputs are NaN / -7 poisoned before each run,
so an element the kernel misses cannot pass."""
import numpy as np
import pytest

from hetcl.backend.buffers import empty, to_device
from hetcl.codegen.gather import Gather, GatherParams

MEAN, STD = 0.2860, 0.3530


def reference(images, labels, indices, mean=MEAN, std=STD):
    rows = images[indices].reshape(len(indices), images[0].size)
    x = (rows.astype(np.float64) / 255 - mean) / std
    return x, labels[indices].astype(np.int32)


def dataset(rng, n, sample_shape):
    images = rng.integers(0, 256, (n,) + sample_shape, dtype=np.uint8)
    images[0].flat[:2] = (0, 255)  # the extremes of the byte range
    return images, rng.integers(0, 10, n, dtype=np.uint8)


def run_gather(device, images, labels, indices, batch, count=None, params=None):
    sample = int(np.prod(images.shape[1:]))
    gather = Gather(device, batch, sample, MEAN, STD, params=params)
    x = empty(device, (batch,) + images.shape[1:]).fill(np.nan)
    y = empty(device, (batch,), np.int32).fill(-7)
    gather(to_device(device, images), to_device(device, labels),
           to_device(device, indices.astype(np.int32)), x, y, count=count).wait()
    return x.get().reshape(batch, sample), y.get()


def check(device, rng, n, sample_shape, batch, count=None, params=None):
    images, labels = dataset(rng, n, sample_shape)
    indices = rng.integers(0, n, batch)
    indices[:3] = (n - 1, 0, n - 1)                   # last image, first image, a repeat
    indices[-1] = indices[batch // 2]                 # another repeat
    x, y = run_gather(device, images, labels, indices, batch, count, params)
    count = batch if count is None else count
    x_ref, y_ref = reference(images, labels, indices[:count])
    where = (n, sample_shape, batch, count, str(params))
    np.testing.assert_allclose(x[:count], x_ref, rtol=1e-6, atol=1e-6, err_msg=str(where))
    np.testing.assert_array_equal(y[:count], y_ref, err_msg=str(where))
    assert np.isnan(x[count:]).all() and (y[count:] == -7).all(), where  # rows past count


@pytest.mark.parametrize("sample_shape,batch", [((1, 28, 28), 64), ((3, 32, 32), 17),
                                                ((1, 5, 7), 33)], ids=["mnist", "cifar", "odd"])
def test_gather_default_params(device, sample_shape, batch):
    check(device, np.random.default_rng(batch), 300, sample_shape, batch)


def test_gather_partial_batch(device):
    rng = np.random.default_rng(1)
    check(device, rng, 200, (1, 28, 28), 64, count=23)
    check(device, rng, 200, (1, 28, 28), 64, count=0)


def test_gather_params_from_space(device):
    rng = np.random.default_rng(2)
    space = GatherParams.valid_space(device.features)
    picks = [GatherParams(WG=16, WPT=1, VW=1), GatherParams(WG=32, WPT=4, VW=8),
             GatherParams(WG=128, WPT=2, VW=16)]
    assert GatherParams.defaults(device.features) in space and all(p in space for p in picks)
    for p in picks:
        # 785 bytes: a partial last unit for VW > 1; 1-row images: a single unit per row.
        for shape in ((1, 785), (3, 32, 32), (1, 1, 3)):
            check(device, rng, 150, shape, 19, count=18, params=p)


def test_gather_from_a_row_offset(device):
    """first: rows b < count come from indices[first + b] of a longer index array (a step's
    place in a streamed chunk); rows past count stay untouched."""
    images, labels = dataset(np.random.default_rng(4), 90, (1, 5, 7))
    indices = np.random.default_rng(5).permutation(90).astype(np.int32)
    gather = Gather(device, 16, 35, MEAN, STD)
    x = empty(device, (16, 35)).fill(np.nan)
    y = empty(device, (16,), np.int32).fill(-7)
    gather(to_device(device, images), to_device(device, labels), to_device(device, indices), x,
           y, count=11, first=77).wait()
    x_ref, y_ref = reference(images, labels, indices[77:88])
    np.testing.assert_allclose(x.get()[:11], x_ref, rtol=1e-6, atol=1e-6)
    assert y.get()[:11].tolist() == y_ref.tolist() and (y.get()[11:] == -7).all()
    with pytest.raises(ValueError, match="indices must be int32 with at least 91"):
        gather(to_device(device, images), to_device(device, labels),
               to_device(device, indices), x, y, count=11, first=80)


def test_gather_bad_index_gives_nan_row(device):
    rng = np.random.default_rng(3)
    images, labels = dataset(rng, 50, (1, 6, 6))
    indices = np.array([49, -1, 50, 2 ** 31 - 1, 0], np.int32)
    x, y = run_gather(device, images, labels, indices, 5)
    assert np.isnan(x[1:4]).all() and y[1:4].tolist() == [-1, -1, -1]
    x_ref, y_ref = reference(images, labels, indices[[0, 4]])
    np.testing.assert_allclose(x[[0, 4]], x_ref, rtol=1e-6, atol=1e-6)
    assert y[[0, 4]].tolist() == y_ref.tolist()


def test_gather_checks_arguments(device):
    gather = Gather(device, 4, 12, MEAN, STD)
    images, labels = to_device(device, np.zeros((6, 12), np.uint8)), empty(device, (6,), np.uint8)
    x, y = empty(device, (4, 12)), empty(device, (4,), np.int32)
    indices = to_device(device, np.zeros(4, np.int32))
    with pytest.raises(ValueError, match="indices must be int32"):
        gather(images, labels, to_device(device, np.zeros(4, np.int64)), x, y)
    with pytest.raises(ValueError, match="labels must be uint8 with 6"):
        gather(images, empty(device, (5,), np.uint8), indices, x, y)
    with pytest.raises(ValueError, match="count=5"):
        gather(images, labels, indices, x, y, count=5)
    with pytest.raises(ValueError, match="std > 0"):
        Gather(device, 4, 12, MEAN, 0.0)


def test_gather_params_space_is_finite_and_checked():
    features = {"simt": False, "local_memory": False, "max_work_group_size": 4096,
                "local_mem_bytes": 1 << 16}
    space = GatherParams.space(features)
    assert 10 < len(space) < 200 and len(set(space)) == len(space)
    assert all(p.check() is None for p in space)
    assert "vector width" in GatherParams(VW=3).check()
    assert "positive" in GatherParams(WG=0).check()
    assert not GatherParams(WG=256).valid(dict(features, max_work_group_size=128))
