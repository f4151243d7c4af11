"""Average pooling (AvgPool2D) and global average pooling (GlobalAvgPool): the kernels forward
and backward against numpy on every device (overlapping windows, stride past the window, odd
and rectangular shapes, batch 1 and 7, the whole image as one window, every tuning point), the
layers against torch, and a network that ends in GlobalAvgPool -> Dense trained on two uneven
devices as on one. Outputs start poisoned (NaN), so a missed element cannot pass."""
import numpy as np
import pytest

import hetcl
from conftest import DEVICES
from hetcl.backend.buffers import empty, to_device
from hetcl.backend.device import Device
from hetcl.codegen.avgpool import AvgPoolBwd, AvgPoolFwd, AvgPoolParams
from hetcl.codegen.probes.conv import avgpool_grad_reference, avgpool_reference
from hetcl.layers import AvgPool2D, Conv2D, Dense, GlobalAvgPool, ReLU

TOL = 1e-5

CASES = [  # (input NCHW, window, stride)
    ((7, 3, 8, 8), (2, 2), (2, 2)),
    ((1, 5, 13, 11), (3, 3), (2, 2)),     # overlapping, odd sizes, ragged edge
    ((7, 2, 7, 9), (3, 2), (1, 2)),       # rectangular window and stride
    ((2, 3, 10, 9), (2, 2), (3, 3)),      # stride > window: pixels no window covers (dx 0)
    ((7, 4, 8, 8), (8, 8), (1, 1)),       # the whole image (GlobalAvgPool)
    ((1, 1, 1, 1), (1, 1), (1, 1)),
]


def rel(a, b):
    return float(np.abs(a - b).max() / max(1.0, np.abs(b).max()))


def run(device, x, size, stride, dy, params=None):
    fwd = AvgPoolFwd(device, x.shape, size, stride, params=params)
    bwd = AvgPoolBwd(device, x.shape, size, stride, params=params)
    y = empty(device, fwd.out_shape).fill(np.nan)
    fwd(to_device(device, x), y)
    dx = empty(device, x.shape).fill(np.nan)
    bwd(to_device(device, dy), dx)
    return y.get(), dx.get()


@pytest.mark.parametrize("shape,size,stride", CASES)
def test_avgpool_kernels_match_numpy(device, shape, size, stride):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape).astype(np.float32)
    ref = avgpool_reference(x, *size, *stride)
    dy = rng.standard_normal(ref.shape).astype(np.float32)
    y, dx = run(device, x, size, stride, dy)
    assert rel(y, ref) < TOL
    assert rel(dx, avgpool_grad_reference(dy, shape, *size, *stride)) < TOL


def test_avgpool_every_tuning_point(device):
    shape, size, stride = (3, 2, 9, 7), (3, 3), (2, 2)
    rng = np.random.default_rng(1)
    x = rng.standard_normal(shape).astype(np.float32)
    ref = avgpool_reference(x, *size, *stride)
    dy = rng.standard_normal(ref.shape).astype(np.float32)
    ref_dx = avgpool_grad_reference(dy, shape, *size, *stride)
    space = AvgPoolParams.valid_space(device.features)
    assert len(space) == 20
    for params in space[::3]:
        y, dx = run(device, x, size, stride, dy, params)
        assert rel(y, ref) < TOL and rel(dx, ref_dx) < TOL, params


def test_avgpool_checks_its_shape(device):
    with pytest.raises(ValueError, match="bad pooling shape"):
        AvgPoolFwd(device, (1, 1, 3, 3), (4, 4), (1, 1))
    with pytest.raises(hetcl.HetclError, match="expects input shape"):
        GlobalAvgPool().build((10,))


@pytest.mark.parametrize("layer,module,shape", [
    (lambda: AvgPool2D(3, 2), lambda nn: nn.AvgPool2d(3, 2), (7, 5, 13, 11)),
    (lambda: AvgPool2D((2, 3)), lambda nn: nn.AvgPool2d((2, 3)), (1, 3, 8, 9)),
    (lambda: GlobalAvgPool(), lambda nn: nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten()),
     (7, 6, 8, 8)),
])
def test_avgpool_layers_match_torch(device, layer, module, shape):
    torch = pytest.importorskip("torch")
    from test_torch import check_against_torch
    x = np.random.default_rng(2).standard_normal(shape)
    check_against_torch(device, layer(), module(torch.nn), x)


def small_net():
    return hetcl.Sequential([Conv2D(1, 4, 3, padding=1), ReLU(), AvgPool2D(2),
                             Conv2D(4, 8, 3, stride=2, padding=1), ReLU(), GlobalAvgPool(),
                             Dense(8, 10)], input_shape=(1, 12, 12), seed=3)


@pytest.mark.skipif(len(DEVICES) < 2, reason="needs two devices (POCL_DEVICES='pthread basic')")
def test_global_avg_pool_net_two_devices_equal_one():
    """Gradients of a batch split 5/2 over two devices == the whole batch on one."""
    rng = np.random.default_rng(4)
    x = rng.standard_normal((7, 1, 12, 12)).astype(np.float32)
    y = rng.integers(0, 10, 7).astype(np.int32)
    fresh = [Device(d.cl_device, dict(d.profile)) for d in DEVICES[:2]]  # (runtimes share
    loss1, g1 = hetcl.Runtime(fresh[:1]).gradients(small_net(), x, y)    # their contexts)
    loss2, g2 = hetcl.Runtime(fresh).gradients(small_net(), x, y, split=[5, 2])
    assert abs(loss1 - loss2) < 1e-5
    for name in g1:
        assert rel(g2[name], g1[name]) < 1e-5, name
