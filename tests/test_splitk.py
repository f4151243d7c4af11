"""The split-K GEMM: exact for any slice count (with and without a K remainder, strided and
offset operands as the conv layers pass them), its slice count from the tuning DB, and
`hetcl tune` tuning it inside a training step."""
import json

import numpy as np
import pytest
from click.testing import CliRunner

from hetcl.backend.buffers import to_device
from hetcl.cli import main
from hetcl.tuning import tunedb
from hetcl.codegen.splitk import MIN_SLICE, SplitKGemm, SplitKParams, bucket

M, N, K = 6, 40, 1400  # 1400 = 7 * 200; with P=3 a tail of 2 is left over
PAD, OFF = 24, 5  # A and B are rows of K + PAD floats, the product starts OFF into them


def run_split(device, p, trans_b, accumulate):
    """-> (C on the device, C in float64 with numpy) for one forced P."""
    rng = np.random.default_rng(p)
    a = rng.standard_normal((M, K + PAD)).astype(np.float32)
    b = rng.standard_normal((N, K + PAD) if trans_b else (K + PAD, N)).astype(np.float32)
    c0 = rng.standard_normal((M, N)).astype(np.float32)
    ldb = K + PAD if trans_b else N
    op = SplitKGemm(device, M, N, K, trans_b, K + PAD, ldb, params=SplitKParams(p))
    assert op.p == p
    c = to_device(device, c0)
    op(to_device(device, a), to_device(device, b), c, a_off=OFF,
       b_off=OFF if trans_b else OFF * N, accumulate=accumulate)
    a64 = a[:, OFF:OFF + K].astype(np.float64)
    b64 = (b[:, OFF:OFF + K].T if trans_b else b[OFF:OFF + K]).astype(np.float64)
    return c.get(), a64 @ b64 + (c0 if accumulate else 0)


@pytest.mark.parametrize("p", [1, 2, 7, 3])
@pytest.mark.parametrize("trans_b", [True, False])
def test_every_slice_count_gives_the_product(device, p, trans_b):
    for accumulate in (False, True):
        got, want = run_split(device, p, trans_b, accumulate)
        assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-5, (p, accumulate)


def test_more_slices_than_k_is_refused(device):
    with pytest.raises(ValueError, match="more slices than K"):
        SplitKGemm(device, M, N, 4, True, 4, 4, params=SplitKParams(5))


def test_the_space_has_one_slice_powers_of_two_and_the_heuristic(device):
    default = SplitKParams.for_shape(device, M, N, K, True)
    space = [p.P for p in SplitKParams.candidates(K, default)]
    powers = [1, 2, 4]  # K // MIN_SLICE = 5
    assert K // MIN_SLICE == 5 and set(space) == set(powers) | {default.P}
    assert [p.P for p in SplitKParams.candidates(100, SplitKParams(1))] == [1]


def test_the_db_chooses_the_slice_count_of_its_bucket(device, fresh_db):
    default = SplitKGemm(device, M, N, K, True, K, K).params
    assert default == SplitKParams.for_shape(device, M, N, K, True)  # a concrete P
    stored = SplitKParams(5 if default.P != 5 else 3)
    tunedb.record(device, "splitk", bucket(M, N, K, True), stored.as_dict(), 0.1, 0.2)
    assert SplitKGemm(device, M, N, K, True, K, K).params == stored
    assert SplitKGemm(device, M, N, K, False, K, N).params == default  # another bucket
    # a stale entry with more slices than K falls back to the heuristic, never fails
    tunedb.record(device, "splitk", bucket(M, N, 4, True), {"P": 9}, 0.1, 0.2)
    assert SplitKGemm(device, M, N, 4, True, 4, 4).params == SplitKParams(1)


def test_hetcl_tune_tunes_the_split_of_lenet5(fresh_db):
    """LeNet-5's conv weight gradients are split-K GEMMs: `hetcl tune` finds them in the
    training step, stores a slice count per shape, and a split built afterwards takes it."""
    from hetcl.backend.device import list_devices
    dev = list_devices()[-1]
    result = CliRunner().invoke(main, ["tune", "--devices", str(dev.index), "--model", "lenet5",
                                       "--candidates", "1", "--batch-size", "16"])
    assert result.exit_code == 0, result.output
    splits = json.loads((fresh_db / "tuning.json").read_text())[
        "devices"][dev.fingerprint]["kernels"]["splitk"]
    conv1 = bucket(6, 25, 12544, True)  # 6 filters x 1*5*5, K = 16 images * 28*28 pixels
    assert conv1 in splits and all(e["ms"] <= e["default_ms"] for e in splits.values())
    chosen = SplitKParams(**splits[conv1]["params"])
    assert SplitKGemm(dev, 6, 25, 12544, True, 12544, 12544).params == chosen
