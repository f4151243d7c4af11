"""GEMM against a float64 numpy reference on every device: awkward shapes, every transpose pair,
several parameter sets from the tuning space, beta, batches and offsets. The output buffer is
poisoned with NaN before each run, so a missed element cannot pass."""
import random

import numpy as np
import pytest

from hetcl.backend.buffers import empty, to_device
from hetcl.codegen.gemm import Gemm
from hetcl.codegen.gemm import GemmParams
from conftest import DEVICES

TOL = 1e-5
TRANSPOSES = [(False, False), (False, True), (True, False), (True, True)]
# 30+ shapes (m, n, k): degenerate, primes, tile multiples +-1, tall, wide, deep, skinny M a
# multiple of 8 (CPUs: stacked 4-row blocks, GemmParams.for_shape), TN with a short K (CPUs:
# packed B panels, MLOOP), and 1000^3.
SHAPES = [(1, 1, 1), (7, 13, 5), (1, 64, 1), (64, 1, 64), (1, 1, 300), (2, 3, 4), (5, 1, 17),
          (13, 7, 33), (17, 31, 1), (31, 17, 64), (33, 65, 9), (63, 63, 63), (64, 64, 64),
          (65, 65, 65), (100, 10, 3), (3, 100, 10), (10, 3, 100), (127, 129, 31), (128, 128, 4),
          (129, 127, 257), (200, 56, 84), (256, 120, 400), (256, 84, 120), (255, 1, 255),
          (1, 255, 255), (16, 784, 25), (784, 6, 25), (150, 400, 16), (97, 89, 83), (512, 3, 512),
          (3, 512, 512), (32, 50, 130), (40, 37, 129), (144, 100, 20), (288, 33, 64),
          (1000, 1000, 1000)]


def operands(rng, m, n, k, ta, tb):
    a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
    return a, b


def reference(a, b, ta, tb, alpha=1.0, beta=0.0, c=None):
    a64 = a.astype(np.float64).T if ta else a.astype(np.float64)
    b64 = b.astype(np.float64).T if tb else b.astype(np.float64)
    out = alpha * (a64 @ b64)
    if beta:
        out += beta * c.astype(np.float64)
    return out


def rel_err(x, ref):
    return np.linalg.norm(x - ref) / max(np.linalg.norm(ref), 1e-30)


def run(device, a, b, m, n, k, ta, tb, params=None, alpha=1.0, beta=0.0, c0=None):
    op = Gemm(device, m, n, k, ta, tb, params=params)
    c = to_device(device, c0) if c0 is not None else empty(device, (m, n)).fill(np.nan)
    op(to_device(device, a), to_device(device, b), c, alpha=alpha, beta=beta)
    return c.get()


@pytest.mark.parametrize("ta,tb", TRANSPOSES)
def test_gemm_shapes_default_params(device, ta, tb):
    rng = np.random.default_rng(0)
    for m, n, k in SHAPES:
        if (m, n, k) == (1000, 1000, 1000) and (ta, tb) != (False, False) and device.kind == "cpu":
            continue  # 1000^3 once per device on CPUs keeps CI short; every transpose below
        a, b = operands(rng, m, n, k, ta, tb)
        out = run(device, a, b, m, n, k, ta, tb)
        assert np.isfinite(out).all(), (m, n, k)
        assert rel_err(out, reference(a, b, ta, tb)) < TOL, (m, n, k)


def sampled_params(device, count=4, seed=1):
    space = GemmParams.valid_space(device.features)
    picks = random.Random(seed).sample(space, count)
    # Always include both memory paths where the device has them.
    for loc in {p.USE_LOCAL for p in space}:
        if not any(p.USE_LOCAL == loc for p in picks):
            picks.append(next(p for p in space if p.USE_LOCAL == loc))
    return picks


def test_gemm_parameter_sets_from_space(device):
    """Four or more points of the space on every device. Each point runs two of the four
    transpose pairs (rotating, so every pair is covered): every (point, pair) is a separate
    program, and a cold PoCL build takes seconds - all sixteen would cost CI minutes."""
    rng = np.random.default_rng(1)
    params = sampled_params(device)
    assert len(params) >= 4
    for i, p in enumerate(params):
        for ta, tb in (TRANSPOSES[i % 4], TRANSPOSES[(i + 1) % 4]):
            for m, n, k in [(7, 13, 5), (67, 45, 39), (130, 129, 70)]:
                a, b = operands(rng, m, n, k, ta, tb)
                out = run(device, a, b, m, n, k, ta, tb, params=p)
                assert rel_err(out, reference(a, b, ta, tb)) < TOL, (str(p), ta, tb, m, n, k)


def test_gemm_alpha_beta(device):
    rng = np.random.default_rng(2)
    m, n, k = 37, 53, 29
    a, b = operands(rng, m, n, k, False, True)
    c0 = rng.standard_normal((m, n)).astype(np.float32)
    out = run(device, a, b, m, n, k, False, True, alpha=0.5, beta=-2.0, c0=c0)
    assert rel_err(out, reference(a, b, False, True, 0.5, -2.0, c0)) < TOL


def test_gemm_batched_with_offsets(device):
    """One launch over a batch, operands at element offsets with batch strides (as conv uses)."""
    rng = np.random.default_rng(3)
    batch, m, n, k = 3, 9, 21, 14
    a = rng.standard_normal((batch, m, k)).astype(np.float32)
    b = rng.standard_normal((batch, n, k)).astype(np.float32)
    pad = 5
    a_buf = to_device(device, np.concatenate([np.zeros(pad, np.float32), a.ravel()]))
    b_buf = to_device(device, b)
    c = empty(device, (pad + batch * m * n,)).fill(np.nan)
    op = Gemm(device, m, n, k, False, True, batch=batch)
    op(a_buf, b_buf, c, a_off=pad, c_off=pad, a_stride=m * k, b_stride=n * k, c_stride=m * n)
    out = c.get()[pad:].reshape(batch, m, n)
    for i in range(batch):
        assert rel_err(out[i], reference(a[i], b[i], False, True)) < TOL


def test_invalid_params_are_rejected(device):
    bad = GemmParams(MWG=48, NWG=64, KWG=16, MDIMC=32, NDIMC=16, VWN=1, USE_LOCAL=0)
    with pytest.raises(ValueError, match="MWG must be a multiple of MDIMC"):
        Gemm(device, 8, 8, 8, params=bad)
    huge = GemmParams(MWG=128, NWG=128, KWG=4096, MDIMC=16, NDIMC=16, VWN=1, USE_LOCAL=1)
    assert "local memory" in huge.invalid_reason(dict(device.features, local_mem_bytes=65536))
    assert "multiple of VWM" in GemmParams(MWG=32, NWG=32, MDIMC=16, NDIMC=8, VWM=4).check()
    assert "local-memory path only" in GemmParams(USE_LOCAL=0, DBUF=1).check()
    # double buffering doubles the tiles: 128x128x32 fits 48 KiB once, not twice
    big = GemmParams(MWG=128, NWG=128, KWG=32, MDIMC=16, NDIMC=16, VWN=4, VWM=4, DBUF=0)
    assert big.valid(dict(device.features, local_mem_bytes=49152, max_work_group_size=1024))
    assert "local memory" in big.replace(DBUF=1).invalid_reason(
        dict(device.features, local_mem_bytes=49152, max_work_group_size=1024))


@pytest.mark.parametrize("p", [
    GemmParams(MWG=64, NWG=64, KWG=16, MDIMC=16, NDIMC=16, VWN=1, USE_LOCAL=1),  # old GPU default
    GemmParams(MWG=128, NWG=128, KWG=16, MDIMC=16, NDIMC=16, VWN=4, USE_LOCAL=1, VWM=4,
               DBUF=1),                                                         # GPU default
    GemmParams(MWG=32, NWG=128, KWG=16, MDIMC=8, NDIMC=16, VWN=4, USE_LOCAL=1, VWM=4, DBUF=0),
    GemmParams(MWG=48, NWG=24, KWG=5, MDIMC=4, NDIMC=6, VWN=2, USE_LOCAL=1, VWM=2,
               DBUF=1),                             # staging that does not divide by the tile
    GemmParams(MWG=32, NWG=64, KWG=8, MDIMC=8, NDIMC=4, VWN=8, USE_LOCAL=1),
    GemmParams(MWG=8, NWG=32, KWG=1, MDIMC=1, NDIMC=1, VWN=16, USE_LOCAL=0),   # 1x1 groups
    GemmParams(MWG=12, NWG=24, KWG=5, MDIMC=3, NDIMC=2, VWN=4, USE_LOCAL=0),   # odd panels
    GemmParams(MWG=12, NWG=16, KWG=16, MDIMC=1, NDIMC=1, VWN=8, USE_LOCAL=0, MLOOP=2),  # packed
    GemmParams(MWG=18, NWG=16, KWG=5, MDIMC=3, NDIMC=2, VWN=4, USE_LOCAL=0, MLOOP=3),
], ids=str)
def test_gemm_forms_and_local_path_everywhere(device, p):
    """Every inner-loop form of the template: the local-memory (GPU) path also runs on CPUs,
    and without it NN/TN take the axpy loop, NT the dot loop, TT the swapped NN loop with a
    transposed store (trans_c), each with edge tiles, alpha and beta. On the first device of each
    kind (the forms are device-independent source; a second CPU device would only double cold
    build time in CI)."""
    if device is not next(d for d in DEVICES if d.kind == device.kind):
        pytest.skip("covered on the first device of this kind")
    if not p.valid(device.features):
        pytest.skip(f"{p} not runnable on {device}")
    rng = np.random.default_rng(4)
    for ta, tb in TRANSPOSES:
        for m, n, k in [(1, 1, 1), (16, 784, 25), (67, 45, 39), (130, 129, 70)]:
            a, b = operands(rng, m, n, k, ta, tb)
            c0 = rng.standard_normal((m, n)).astype(np.float32)
            out = run(device, a, b, m, n, k, ta, tb, params=p, alpha=0.5, beta=-2.0, c0=c0)
            ref = reference(a, b, ta, tb, 0.5, -2.0, c0)
            assert rel_err(out, ref) < TOL, (str(p), ta, tb, m, n, k)


def test_cpu_tn_default_packs_b_panels(device):
    """A conv's input gradient (TN, short K) on a CPU takes packed B panels (MLOOP) with one
    panel as deep as K; the other transposes of the shape do not."""
    if device.features["local_memory"]:
        pytest.skip("CPU defaults")
    p = GemmParams.for_shape(device.features, 144, 115712, 16, True, False)
    assert p.MLOOP > 1 and p.KWG == 16 and p.valid(device.features)
    assert GemmParams.for_shape(device.features, 144, 115712, 16).MLOOP == 1


# Local-memory parameter sets (the GPU path) forced on every device, vector widths 4 and 8.
LOCAL = [GemmParams(MWG=32, NWG=32, KWG=8, MDIMC=8, NDIMC=8, VWN=4, USE_LOCAL=1, VWM=4, DBUF=1),
         GemmParams(MWG=16, NWG=64, KWG=8, MDIMC=4, NDIMC=8, VWN=8, USE_LOCAL=1, VWM=1, DBUF=0)]


@pytest.mark.parametrize("act", ["none", "relu", "sigmoid"])
def test_epilogue_stores_bias_and_activation_in_nchw(device, act):
    """Y[img, m, p] = act(alpha * (A @ B)[m, img*S + p] + bias[m]) from element c_off of an NCHW
    batch, as a conv layer's forward uses it: S a multiple of the vector width and not (12 with
    VWN=8: lane by lane), edge tiles, the device's parameters (and, with relu, two local-memory
    sets: the GPU path)."""
    rng = np.random.default_rng(11)
    sets = [None] + ([p for p in LOCAL if p.valid(device.features)] if act == "relu" else [])
    for m, images, s, k in [(5, 3, 12, 7), (64, 2, 16, 27), (3, 1, 1, 4)]:
        n = images * s
        a = rng.standard_normal((m, k)).astype(np.float32)
        b = rng.standard_normal((k, n)).astype(np.float32)
        bias = rng.standard_normal(m).astype(np.float32)
        z = 0.5 * (a.astype(np.float64) @ b) + bias[:, None]
        ref = {"none": z, "relu": np.maximum(z, 0), "sigmoid": 1 / (1 + np.exp(-z))}[act]
        ref = ref.reshape(m, images, s).transpose(1, 0, 2)
        for params in sets:
            op = Gemm(device, m, n, k, params=params, epilogue=(act, s))
            y = empty(device, (images + 1, m, s)).fill(np.nan)  # image 0 stays untouched
            op(to_device(device, a), to_device(device, b), y, alpha=0.5, c_off=m * s,
               bias=to_device(device, bias)).wait()
            out = y.get()
            assert np.isnan(out[0]).all(), (m, s, params)
            assert rel_err(out[1:], ref) < TOL, (m, s, params)
    with pytest.raises(ValueError, match="bias="):
        Gemm(device, 2, 4, 3, epilogue=("relu", 4))(empty(device, (6,)), empty(device, (12,)),
                                                     empty(device, (8,)))
