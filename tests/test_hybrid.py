"""Hybrid parallelism (hetcl/parallel/hybrid.py) on two devices (POCL_DEVICES="pthread basic"): the same
training as data parallelism, the bytes of the documented formula, re-slicing, auto's choice."""
import numpy as np
import pytest

import hetcl
from hetcl.errors import HetclError
from hetcl.parallel.hybrid_plan import columns, dense_tail, transfer_bytes
from hetcl.model.layers import Conv2D, Flatten, ReLU
from hetcl.model.graph import Sequential
from hetcl.model.models import cifar_cnn_wide, lenet5, mlp
from hetcl.model.optim import SGD
from test_multidevice import DEVICES, batch, rel
from test_train import cfg, run, small_data  # noqa: F401  (fixture)

pytestmark = pytest.mark.skipif(len(DEVICES) < 2, reason="needs two OpenCL devices "
                                "(POCL_DEVICES='pthread basic')")


def train(make, mode, x, y, splits, steps, lr=0.05, opt=None):
    """(model, runtime) after `steps` SGD steps (or of `opt`) with each split of `splits` in
    turn."""
    model = make(seed=1).build()
    rt = hetcl.Runtime(DEVICES[:2], parallel=mode)
    opt = opt or SGD(lr, 0.9, weight_decay=1e-3)
    for step in range(steps):
        rt.train_step(model, opt, x, y, split=splits[step * len(splits) // steps])
    return model, rt


def test_columns_follow_the_batch_split():
    assert columns(10, [200, 56]) == [8, 2]
    assert columns(4096, [11, 5]) == [2816, 1280]
    assert columns(10, [255, 1]) == [10, 0]
    assert columns(7, [0, 3, 3]) == [0, 4, 3] and sum(columns(84, [5, 7, 11])) == 84


def test_dense_tail_is_the_trailing_dense_layers():
    tail = dense_tail(cifar_cnn_wide().build())
    assert [node.layer.out_features for node in tail] == [4096, 4096, 10]
    assert [node.act for node in tail] == ["relu", "relu", "none"]
    convs_only = Sequential([Conv2D(1, 4, 3), ReLU(), Flatten()], input_shape=(1, 8, 8))
    assert dense_tail(convs_only.build()) == []
    x = np.zeros((8, 1, 8, 8), np.float32)
    with pytest.raises(HetclError, match="ends in dense layers"):
        hetcl.Runtime(DEVICES[:2], parallel="hybrid").train_step(
            convs_only, SGD(0.1), x, np.zeros(8, np.int32), split=[4, 4])


@pytest.mark.parametrize("make,n,split,lr", [(lenet5, 64, [40, 24], 0.05),
                                             (cifar_cnn_wide, 8, [5, 3], 0.0005)])
def test_hybrid_trains_like_data_parallelism(make, n, split, lr):
    shape = make().build().nodes[0].shape
    rng = np.random.default_rng(7)
    x = rng.standard_normal((n,) + shape).astype(np.float32)
    y = rng.integers(0, 10, n).astype(np.int32)
    data, _ = train(make, "data", x, y, [split], 20, lr)
    hybrid, rt = train(make, "hybrid", x, y, [split], 20, lr)
    a, b = data.parameters(), hybrid.parameters()
    # 1e-5 on CPUs. GPUs add and round the dense layers' sums in other orders for a slice than
    # for the whole layer (tiles, split-K): on two H200s cifar-cnn-wide's conv0.bias, ~1e-3 in
    # size and a sum of cancelling terms, drifted 2.7e-5 apart in 20 steps.
    tol = 1e-5 if all(not d.features["simt"] for d in DEVICES[:2]) else 1e-4
    for k in a:
        assert np.isfinite(a[k]).all() and rel(b[k], a[k]) < tol, k
    heads = [rt.state(hybrid).hybrid.heads[p].download() for p in (0, 1)]
    for k in heads[0]:  # the data-parallel part stays bitwise identical on both devices
        assert np.array_equal(heads[0][k], heads[1][k]), k


@pytest.mark.parametrize("make", [lenet5, mlp])
@pytest.mark.parametrize("mode", ["data", "hybrid"])
def test_bytes_between_devices_follow_the_formula(make, mode):
    x, y = batch(64, seed=4)
    model, rt = train(make, mode, x, y, [[40, 24]], 2)
    assert rt.last_bytes == transfer_bytes(model, mode, [40, 24]) > 0
    if make is mlp:  # 784-256-128-10: 235k parameters, 64 x (784 + 256 + 128 + 10) activations
        assert transfer_bytes(model, "data", [40, 24]) == 4 * 235146 * 4


def test_a_new_split_reslices_weights_and_momentum():
    x, y = batch(64, seed=5)
    splits = [[40, 24], [16, 48], [64, 0], [32, 32]]
    data, rt_data = train(lenet5, "data", x, y, splits, 16)
    hybrid, rt = train(lenet5, "hybrid", x, y, splits, 16)
    a, b = data.parameters(), hybrid.parameters()
    ma, mb = rt_data.optimizer_state(data), rt.optimizer_state(hybrid)
    assert sorted(ma) == sorted(f"momentum:{k}" for k in a) == sorted(mb)
    for k in a:
        assert rel(b[k], a[k]) < 1e-5, k
    for k in ma:
        assert rel(mb[k], ma[k]) < 1e-5, k
    assert rt.state(hybrid).hybrid.cols[0] == [60, 60]


@pytest.mark.parametrize("optimizer", [hetcl.optim.Adam, hetcl.optim.AdamW])
def test_hybrid_adam_trains_like_data_parallelism(optimizer):
    """Both Adam buffers are sliced with the dense weights and handed back whole."""
    x, y = batch(64, seed=8)
    splits = [[40, 24], [16, 48]]
    data, rt_data = train(mlp, "data", x, y, splits, 8, opt=optimizer(1e-3))
    hybrid, rt = train(mlp, "hybrid", x, y, splits, 8, opt=optimizer(1e-3))
    a, b = data.parameters(), hybrid.parameters()
    ma, mb = rt_data.optimizer_state(data), rt.optimizer_state(hybrid)
    assert sorted(ma) == sorted(mb) == sorted(f"{kind}:{k}" for kind in ("exp_avg", "exp_avg_sq")
                                              for k in a)
    for k in a:
        assert rel(b[k], a[k]) < 1e-5, k
    for k in ma:
        assert rel(mb[k], ma[k]) < 1e-4, k


def test_gradients_are_assembled_from_the_slices():
    x, y = batch(64, seed=6)
    model = lenet5(seed=2).build()
    _, ref = hetcl.Runtime(DEVICES[:1]).gradients(model, x, y)
    _, got = hetcl.Runtime(DEVICES[:2], parallel="hybrid").gradients(model, x, y, split=[20, 44])
    assert set(got) == set(ref)
    for k in ref:
        assert rel(got[k], ref[k]) < 1e-5, k


def test_auto_times_both_keeps_the_faster_and_trains_the_same():
    """auto: 8 steps data-parallel, 8 hybrid, then the faster; the parameters are those of
    plain data parallelism whichever ran when (the hand-overs carry weights and momentum)."""
    x, y = batch(64, seed=8)
    data, _ = train(lenet5, "data", x, y, [[40, 24]], 20)
    auto, rt = train(lenet5, "auto", x, y, [[40, 24]], 20)
    msg = rt.messages[0]
    assert msg.startswith("parallel auto: ") and "median step over 5 steps each: data " in msg
    ms = {m: float(msg.split(f"{m} ")[-1].split(" ms")[0]) for m in ("data", "hybrid")}
    picked = msg.split()[2]
    assert ms[picked] == min(ms.values())
    assert (rt.state(auto).hybrid is not None) == (picked == "hybrid")
    a, b = data.parameters(), auto.parameters()
    for k in a:
        assert rel(b[k], a[k]) < 1e-5, k


def test_hybrid_refuses_mpi_and_unknown_modes():
    with pytest.raises(HetclError, match="within one process"):
        hetcl.Runtime(DEVICES[:1], world=object(), parallel="hybrid")
    with pytest.raises(HetclError, match="unknown parallel mode"):
        hetcl.Runtime(DEVICES[:1], parallel="model")


def test_hybrid_training_resumes_to_the_same_parameters(small_data, tmp_path):  # noqa: F811
    """2 epochs == 1 epoch, checkpoint, resume for 1 more: the dense slices' weights and
    momentum go through the checkpoint and come back sliced. The splits follow measured speeds
    (not bitwise repeatable), hence a tolerance rather than equality."""
    const = dict(lr_schedule="constant", warmup_epochs=0.0, devices="0,1", parallel="hybrid")
    full, _ = run(cfg(small_data, epochs=2, **const))
    run(cfg(small_data, tmp_path, epochs=1, **const))
    resumed, history = run(cfg(small_data, tmp_path, epochs=2, resume=True, override=True,
                                 **const))
    assert [h["epoch"] for h in history] == [1, 2]
    a, b = full.model.parameters(), resumed.model.parameters()
    for k in a:
        assert rel(b[k], a[k]) < 1e-4, k
    assert full.rt.state(full.model).hybrid is not None


def test_a_device_failing_in_a_hybrid_step_stops_with_a_clear_error(monkeypatch):
    monkeypatch.setenv("HETCL_FAULT", f"{DEVICES[1].index}:2")
    x, y = batch(64, seed=9)
    rt, model, opt = hetcl.Runtime(DEVICES[:2], parallel="hybrid"), lenet5().build(), SGD(0.01)
    rt.train_step(model, opt, x, y, split=[32, 32])
    with pytest.raises(HetclError, match="resume from the last checkpoint with --parallel data"):
        rt.train_step(model, opt, x, y, split=[32, 32])
