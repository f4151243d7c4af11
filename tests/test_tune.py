"""The tuning DB and the GEMM tuner: lookup order, corrupt files, never slower, and that GEMMs
built afterwards use what the DB says."""
import json
import warnings

import numpy as np
import pytest
from click.testing import CliRunner

from hetcl.cli import main
from hetcl.tuning.buckets import gemm_bucket
from hetcl.tuning import tunedb
from hetcl.codegen.gemm import Gemm, GemmParams, gemm, tuned_params
from hetcl.tuning.tuner import tune_gemm


def odd_params(device):
    """A valid point of the space that no default uses."""
    defaults = {GemmParams.defaults(device.features), GemmParams.for_shape(device.features, 8, 8, 8)}
    return next(p for p in GemmParams.valid_space(device.features) if p not in defaults)


def test_recorded_params_are_used_by_new_gemms(device, fresh_db):
    p = odd_params(device)
    problem = (33, 65, 17, False, True, 1)
    tunedb.record(device, "gemm", gemm_bucket(*problem), p.as_dict(), 0.1, 0.2)
    assert tuned_params(device, *problem) == p
    assert Gemm(device, 33, 65, 17, trans_b=True).params == p
    assert Gemm(device, 33, 65, 17, trans_b=False).params != p  # another bucket
    a = np.random.default_rng(0).standard_normal((33, 17)).astype(np.float32)
    b = np.random.default_rng(1).standard_normal((65, 17)).astype(np.float32)
    np.testing.assert_allclose(gemm(device, a, b, trans_b=True), a @ b.T, rtol=1e-4, atol=1e-4)


def test_lookup_falls_back_to_same_vendor_and_kind(device, fresh_db):
    p = odd_params(device)
    data = {"format": 1, "devices": {"another-fingerprint": {
        "name": "a sibling", "vendor": device.profile["vendor"], "kind": device.kind,
        "driver": "0", "kernels": {"gemm": {"NN-64x64x64": {"params": p.as_dict(), "ms": 1,
                                                           "default_ms": 2}}}}}}
    (fresh_db / "shipped.json").write_text(json.dumps(data))
    tunedb._db = None
    assert tuned_params(device, 60, 50, 40, False, False, 1) == p
    data["devices"]["another-fingerprint"]["kind"] = "accelerator"
    (fresh_db / "shipped.json").write_text(json.dumps(data))
    tunedb._db = None
    assert tuned_params(device, 60, 50, 40, False, False, 1) != p


def test_corrupt_db_is_ignored_with_a_warning(device, fresh_db):
    (fresh_db / "tuning.json").write_text("{ not json")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        params = tuned_params(device, 8, 8, 8, False, False, 1)
    assert params == GemmParams.for_shape(device.features, 8, 8, 8)
    assert any("ignoring the tuning DB" in str(w.message) for w in caught)
    with pytest.warns(UserWarning, match="ignoring the tuning DB"):  # rebuilt, not fatal
        tunedb.record(device, "gemm", "NN-8x8x8", params.as_dict(), 1.0, 1.0)
    assert json.loads((fresh_db / "tuning.json").read_text())["format"] == 1


def test_tuner_never_picks_something_slower_than_before(device, fresh_db):
    problem = (40, 300, 64, True, False, 1)
    best, ms, before = tune_gemm(device, problem, count=3, reps=3)
    assert ms <= before and best.valid(device.features)
    a = np.random.default_rng(2).standard_normal((64, 40)).astype(np.float32)
    b = np.random.default_rng(3).standard_normal((64, 300)).astype(np.float32)
    np.testing.assert_allclose(gemm(device, a, b, trans_a=True, params=best), a.T @ b,
                               rtol=1e-4, atol=1e-4)


def test_hetcl_tune_writes_the_db_for_every_gemm_of_the_model(fresh_db):
    from hetcl.backend.device import list_devices
    dev = list_devices()[-1]
    result = CliRunner().invoke(main, ["tune", "--devices", str(dev.index), "--model", "mlp",
                                       "--candidates", "1", "--batch-size", "32"])
    assert result.exit_code == 0, result.output
    data = json.loads((fresh_db / "tuning.json").read_text())
    buckets = data["devices"][dev.fingerprint]["kernels"]["gemm"]
    # MLP 784-256-128-10: 3 forward, 3 weight-gradient and 2 input-gradient GEMMs
    assert len(buckets) == 8 and "NT-32x256x1024" in buckets
    assert all(e["ms"] <= e["default_ms"] for e in buckets.values())
    assert "saved to" in result.output


def test_hetcl_tune_kernels_limits_what_is_tuned(fresh_db):
    """--kernels other: the non-GEMM kernels of the step get entries, no GEMM or split does."""
    from hetcl.backend.device import list_devices
    dev = list_devices()[-1]
    result = CliRunner().invoke(main, ["tune", "--devices", str(dev.index), "--model", "mlp",
                                       "--candidates", "1", "--batch-size", "32",
                                       "--kernels", "other"])
    assert result.exit_code == 0, result.output
    kinds = set(json.loads((fresh_db / "tuning.json").read_text())["devices"][dev.fingerprint]
                ["kernels"])
    assert "bias_act" in kinds and not kinds & {"gemm", "splitk"}


def test_a_winner_that_loses_inside_the_training_step_is_not_taken(device, fresh_db,
                                                                   monkeypatch):
    """The isolated search is told to crown a one-element-per-work-item kernel; checked in a
    LeNet-5 step against the current choice it loses, so the DB keeps the current choice."""
    from hetcl.tuning import tune as tune_module
    slow = GemmParams(MWG=1, NWG=1, KWG=1, MDIMC=1, NDIMC=1, VWN=1, USE_LOCAL=0)
    if not slow.valid(device.features):
        pytest.skip("the scalar kernel is not valid here")
    monkeypatch.setattr(tune_module, "tune_gemm",
                        lambda device, problem, count, progress=None: (slow, 0.001, 1.0))
    monkeypatch.setattr(tune_module, "step_kernels", lambda *args: {})  # GEMMs only
    rows = tune_module.tune([device], ["lenet5"], batch=16, count=1,
                            report=lambda *a, **k: None)
    assert rows and all(best != slow and ms <= before for _, _, _, best, ms, before in rows)
    assert tunedb.database().lookup(device, *rows[0][1]) == rows[0][3].as_dict()


def test_the_other_kernels_are_tuned_in_the_step_and_used_afterwards(device, fresh_db):
    """im2col, bias+activation, pooling, split-K, ...: every kernel of a LeNet-5 step gets a
    DB entry that is never slower than before, and kernels built afterwards take it."""
    from conftest import DEVICES
    from hetcl.tuning import tune as tune_module
    from hetcl.codegen.conv import Im2Col
    if device is not DEVICES[0]:
        pytest.skip("covered on the first device (a tune takes a while)")
    kernels = tune_module.step_kernels("lenet5", device, 16)
    assert {"im2col", "col2im", "bias_act", "act_bwd", "bias_grad", "maxpool_fwd",
            "maxpool_bwd", "splitk"} <= {kernel for kernel, _ in kernels}
    rows = [r for r in tune_module.tune([device], ["lenet5"], batch=16, count=1, rounds=3,
                                        report=lambda *a, **k: None) if r[1][0] != "gemm"]
    # (the splits are tuned first and may change the shape of the reduction inside them)
    assert {key for _, key, _, _, _, _ in rows} == set(tune_module.step_kernels("lenet5",
                                                                                device, 16))
    assert all(ms <= before and best.valid(device.features)
               for _, _, _, best, ms, before in rows)
    conv0 = {key: best for _, key, _, best, _, _ in rows}[("im2col",
                                                          "n16 1x28x28 k5x5 s1x1 p2x2")]
    assert Im2Col(device, (1, 28, 28), (5, 5), (1, 1), (2, 2), 16).params == conv0


def test_conv_dx_choice_is_found_and_timed_in_the_step(device, fresh_db):
    """cifar-cnn's 64->64 and 128->128 convs (stride 1) can take dx either way
    (codegen/conv_dx.py): the tuner sees one "conv_dx" entry per such layer, with both
    choices, and times the alternative inside the training step."""
    from conftest import DEVICES
    from hetcl.tuning import tune as tune_module
    from hetcl.codegen.conv_dx import ConvDxParams
    if device is not DEVICES[0]:
        pytest.skip("covered on the first device (a cifar-cnn step takes a while)")
    kernels = tune_module.step_kernels("cifar-cnn", device, 2)
    found = {bucket: entry for (kernel, bucket), entry in kernels.items() if kernel == "conv_dx"}
    assert sorted(found) == ["n2 128x16x16 f128 k3x3 s1x1 p1x1", "n2 64x32x32 f64 k3x3 s1x1 p1x1"]
    assert all(current == ConvDxParams(0) and space == [ConvDxParams(0), ConvDxParams(1)]
               for current, space in found.values())
    key = ("conv_dx", "n2 128x16x16 f128 k3x3 s1x1 p1x1")
    [(params, before, ms)] = tune_module.compare_in_step("cifar-cnn", device, 2, key,
                                                         ConvDxParams(0), [ConvDxParams(1)], 2)
    assert params == ConvDxParams(1) and before > 0 and ms > 0


def test_gemm_neighbours_are_valid_one_step_moves():
    """The GPU GEMM search's local moves: valid points that differ from the start along one
    axis or one pair of axes of its grid, by one step of that axis."""
    feat = dict(local_memory=True, simt=True, max_work_group_size=1024, local_mem_bytes=49152)
    start = GemmParams.for_shape(feat, 64, 262144, 576)
    grid = GemmParams.grids(feat)[0]
    near = start.neighbours(feat)
    assert len(near) >= 8 and start not in near and len(set(near)) == len(near)
    for p in near:
        assert p.valid(feat) and p.searched() and p.USE_LOCAL
        changed = [k for k in grid if getattr(p, k) != getattr(start, k)]
        assert 1 <= len(changed) <= 2
        for k in changed:
            assert abs(grid[k].index(getattr(p, k)) - grid[k].index(getattr(start, k))) == 1
    # a point outside every grid of the device (the CPU default on a GPU) has none
    assert GemmParams.defaults(dict(feat, local_memory=False)).neighbours(feat) == []


def test_kernel_spaces_are_checked_searched_and_unique():
    """space() of every kernel: the points of its grids that pass check() and searched(),
    each once; the GEMM's CPU space keeps to register blocks of at most 24 vectors."""
    from hetcl.codegen.eltwise import BiasGradParams
    from hetcl.codegen.loss import LossParams
    cpu = dict(local_memory=False, simt=False, max_work_group_size=4096, local_mem_bytes=1 << 20)
    for cls in (GemmParams, BiasGradParams, LossParams):
        space = cls.space(cpu)
        assert space and len(set(space)) == len(space)
        assert all(p.check() is None and p.searched() for p in space)
    for p in GemmParams.space(cpu):
        assert not p.USE_LOCAL and p.NDIMC == 1
        assert (p.MWG // p.MDIMC) * (p.NWG // p.VWN) <= 24
    assert not GemmParams(MWG=16 * 12, NWG=48, KWG=128, MDIMC=16, NDIMC=1, VWN=16,
                          USE_LOCAL=0).searched()  # 12 rows x 3 vectors: 36 accumulators
    assert max(p.work_group_size() for p in BiasGradParams.space(cpu)) <= 1024
