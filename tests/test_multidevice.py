"""One batch across two uneven devices (POCL_DEVICES="pthread basic"): exact gradients for
uneven splits, identical replicas, the scheduler's split, and a device that fails mid-run."""
import warnings

import numpy as np
import pytest

import hetcl
from hetcl.backend.device import Device, list_devices, share_contexts
from hetcl.errors import DeviceWarning
from hetcl.model.models import lenet5, mlp
from hetcl.model.optim import SGD
from hetcl.training.train import TrainConfig, Trainer
from test_train import N_TRAIN, small_data  # noqa: F401  (fixture)

DEVICES = list_devices()
pytestmark = pytest.mark.skipif(len(DEVICES) < 2, reason="needs two OpenCL devices "
                                "(POCL_DEVICES='pthread basic')")


def rel(a, b):
    return np.linalg.norm(a.astype(np.float64) - b) / max(np.linalg.norm(b), 1e-30)


def batch(n, seed=0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n, 1, 28, 28)).astype(np.float32),
            rng.integers(0, 10, n).astype(np.int32))


def pair(context):
    """Two fresh Device objects for a multi-device runtime. "own": each with its own context
    (the exchange waits on the host); "shared": in one context, as the runtime gives GPUs of
    one platform (uploads wait on the peers' read events and the host waits for nothing; for
    CPUs see the subprocess test)."""
    fresh = [Device(d.cl_device, dict(d.profile)) for d in DEVICES[:2]]
    if context == "own":
        for d in fresh:
            d.context  # noqa: B018  (its own, created before any runtime could share one)
        return fresh
    share_contexts(fresh)
    if fresh[0]._context is None or fresh[0].context is not fresh[1].context:
        pytest.skip("these devices do not share a context (platforms or device.features)")
    return fresh


CONTEXTS = pytest.mark.parametrize("context", ["own", "shared"])


@CONTEXTS
@pytest.mark.parametrize("split", [[200, 56], [255, 1]])
def test_uneven_split_gives_the_one_device_gradients(split, context):
    model = lenet5(seed=1).build()
    x, y = batch(256)
    devices = pair(context)
    rt2 = hetcl.Runtime(devices)
    assert (devices[0].context is devices[1].context) == (context == "shared")
    loss1, g1 = hetcl.Runtime(DEVICES[:1]).gradients(model, x, y)
    loss2, g2 = rt2.gradients(model, x, y, split=split)
    assert abs(loss2 - loss1) / loss1 < 1e-5
    for k in g1:
        assert rel(g2[k], g1[k]) < 1e-5, k


@CONTEXTS
def test_replicas_stay_identical_and_match_one_device(context):
    x, y = batch(64, seed=2)
    two, one = mlp(seed=4).build(), mlp(seed=4).build()
    devices = pair(context)
    rt2, rt1 = hetcl.Runtime(devices, granule=8), hetcl.Runtime(DEVICES[:1])
    opt2, opt1 = SGD(0.05, 0.9), SGD(0.05, 0.9)
    for step in range(50):
        rt2.train_step(two, opt2, x, y)
        rt1.train_step(one, opt1, x, y)
    reps = [rt2.replica(two, d) for d in devices]
    for name in reps[0].params:
        assert np.array_equal(reps[0].params[name].get(), reps[1].params[name].get()), name
    a, b = two.parameters(), one.parameters()
    for k in a:
        assert rel(a[k], b[k]) < 1e-4, k
    assert sum(rt2.last_split) == 64 and rt2.steps == 50


@CONTEXTS
def test_deferred_results_equal_waited_ones(context):
    """train_step_indices(defer=True) returns before the loss is read; steps read late, even
    after several more were enqueued, give the same losses, accuracies and parameters as
    steps that wait (one device, and two in each kind of context)."""
    rng = np.random.default_rng(5)
    images = rng.integers(0, 256, (96, 1, 28, 28)).astype(np.uint8)
    labels = rng.integers(0, 10, 96).astype(np.uint8)
    order = [rng.permutation(96)[:48] for _ in range(6)]
    for devices in (DEVICES[:1], pair(context)):
        runs = []
        for defer in (False, True):
            model, opt = mlp(seed=3).build(), SGD(0.05, 0.9)
            rt = hetcl.Runtime(devices, adaptive=False)
            out = [rt.train_step_indices(model, opt, images, labels, idx, 0.3, 0.3,
                                         return_correct=True, defer=defer) for idx in order]
            results = [r.get() for r in out] if defer else out
            runs.append((results, model.parameters()))
        (waited, p0), (late, p1) = runs
        assert np.allclose([l for l, _ in waited], [l for l, _ in late], rtol=1e-5)
        if len(devices) == 1:  # bitwise; two devices may split differently (measured speeds)
            assert [c for _, c in waited] == [c for _, c in late]
            assert all(np.array_equal(p0[k], p1[k]) for k in p0)
        for k in p0:
            assert rel(p1[k], p0[k]) < 1e-5, k


def test_scheduler_split_is_used_and_reported():
    x, y = batch(256, seed=3)
    model = mlp(seed=0).build()
    rt = hetcl.Runtime(DEVICES[:2])
    opt = SGD(0.01)
    for _ in range(4):
        rt.train_step(model, opt, x, y)
    assert sum(rt.last_split) == 256
    speeds = rt.scheduler.speed
    assert all(s is None or s > 0 for s in speeds)
    # the split follows the measured speeds, or a device that gets nothing is told why
    if 0 in rt.last_split:
        empty = rt.scheduler.names[rt.last_split.index(0)]
        assert any(m.startswith(f"scheduler: dropping {empty}:") or
                   m.startswith(f"scheduler: {empty} gets no samples") for m in
                   rt.scheduler.messages), rt.scheduler.messages


def test_a_pause_between_steps_is_not_timed_as_a_step(monkeypatch):
    """The scheduler times steps start to start; after Runtime.pause() (a benchmark timing
    another configuration in between) the next step's start-to-start time is not recorded."""
    x, y = batch(32, seed=4)
    model = mlp(seed=0).build()
    rt = hetcl.Runtime(DEVICES[:2])
    recorded = []
    monkeypatch.setattr(rt.scheduler, "end_step", recorded.append)
    opt = SGD(0.01)
    rt.train_step(model, opt, x, y)   # the first step has no start before it
    rt.train_step(model, opt, x, y)   # the first one's time (measured: None) is recorded
    assert len(recorded) == 1
    rt.pause()
    rt.train_step(model, opt, x, y)   # starts after the pause: nothing recorded
    assert len(recorded) == 1
    rt.train_step(model, opt, x, y)
    assert len(recorded) == 2


def test_a_device_that_fails_is_removed_and_training_goes_on(small_data, monkeypatch):  # noqa: F811
    cfg = dict(model="mlp", data=small_data, epochs=1, batch_size=128, seed=5, progress=False)
    steps = -(-N_TRAIN // 128)
    monkeypatch.setenv("HETCL_FAULT", f"{DEVICES[1].index}:3")
    # adaptive=False and an even split: the failing device is in use at step 3 (split by
    # measured speed, a loaded host's slow device can get no samples: under one granule)
    runtime = hetcl.Runtime(DEVICES[:2], adaptive=False)
    monkeypatch.setattr(runtime.scheduler, "split", lambda n: [n // 2, n - n // 2])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer = Trainer(TrainConfig(**cfg), runtime=runtime)
        history = trainer.run()
    messages = [str(w.message) for w in caught if issubclass(w.category, DeviceWarning)]
    assert len(messages) == 1 and "injected fault (HETCL_FAULT=" in messages[0]
    assert trainer.rt.failed == {1} and trainer.opt.steps == steps and trainer.rt.steps == steps
    monkeypatch.delenv("HETCL_FAULT")
    single = Trainer(TrainConfig(devices=str(DEVICES[0].index), **cfg))
    reference = single.run()
    assert abs(history[0]["test_acc"] - reference[0]["test_acc"]) <= 0.01
    assert abs(history[0]["train_loss"] - reference[0]["train_loss"]) < 1e-3


THREE_DEVICES = r"""
import numpy as np, hetcl, hetcl.backend.device
from hetcl.model.models import lenet5
devices = hetcl.list_devices()
assert len(devices) == 3, devices
rng = np.random.default_rng(5)
x = rng.standard_normal((256, 1, 28, 28)).astype(np.float32)
y = rng.integers(0, 10, 256).astype(np.int32)
model = lenet5(seed=3).build()
if FORCE:  # one context for all (the runtime does not share CPU devices' contexts by itself)
    hetcl.backend.device.share_contexts(devices, force=True)
    assert all(d.context is devices[0].context for d in devices)
_, ref = hetcl.Runtime(devices[:1]).gradients(model, x, y)
rt = hetcl.Runtime(devices, adaptive=False)  # (keeps all three in use for the steps below)
_, got = rt.gradients(model, x, y, split=[100, 60, 96])
worst = max(np.linalg.norm(got[k] - ref[k]) / np.linalg.norm(ref[k]) for k in ref)
grads = [{k: v.get() for k, v in rt.replica(model, d).grads.items()} for d in devices]
same = all(np.array_equal(g[k], grads[0][k]) for g in grads for k in ref)
opt = hetcl.optim.SGD(0.05, 0.9)  # replicas after steps of training
for _ in range(20):
    rt.train_step(model, opt, x, y)
reps = [rt.replica(model, d).download() for d in devices]
same = same and all(np.array_equal(r[k], reps[0][k]) for r in reps for k in ref)
print(f"worst={worst:.3g} same={same}")
"""


@pytest.mark.parametrize("pocl_devices,force", [("basic basic pthread", False),
                                                ("pthread pthread pthread", True)])
def test_three_devices_sum_in_one_order_and_match_one_device(pocl_devices, force):
    """Three devices (a child process with PoCL showing three CPU devices), each in its own
    context (the host waits for the reads) or in one (uploads wait on the peers' reads; only
    with pthread devices: pocl#1177): the device-side sum gives one device's gradients, and
    bitwise the same on all three replicas (device 2 sums in a staging buffer so that its order
    is that of devices 0 and 1), which stay identical over 20 steps."""
    import subprocess
    import sys
    from conftest import subprocess_env
    if not all(d.profile["platform"] == "Portable Computing Language" for d in DEVICES):
        pytest.skip("needs PoCL, which can show three CPU devices")
    out = subprocess.run([sys.executable, "-c", f"FORCE = {force}\n" + THREE_DEVICES],
                         capture_output=True, text=True,
                         env=subprocess_env(POCL_DEVICES=pocl_devices), timeout=600)
    assert out.returncode == 0, out.stderr
    worst, same = out.stdout.split()[-2:]
    assert float(worst.split("=")[1]) < 1e-5 and same == "same=True", out.stdout


def test_gradient_layout_is_the_same_on_every_device():
    """The all-reduce adds whole layer regions across devices (and MPI ranks), so a layer's
    layout must not follow a device's own sub-buffer alignment (32 floats on PoCL, 128 on
    NVIDIA's driver: a GPU beside the CPU once failed with 874 against 906 elements)."""
    from hetcl.engine.replica import GRAD_ALIGN, Replica
    model = lenet5(seed=1).build()
    params = model.parameters()
    layouts = []
    for d in DEVICES:
        replica = Replica(model, d)
        layout = {}
        for name in ("dense2.weight", "dense2.bias"):
            region, nbytes = replica.grad_span([name])
            layout[name] = region.shape
        layouts.append(layout)
        assert nbytes == params["dense2.weight"].nbytes + params["dense2.bias"].nbytes
    # dense2: an 84x10 weight (840 floats), then the bias at the next GRAD_ALIGN boundary
    assert layouts[0]["dense2.bias"] == (GRAD_ALIGN + 10,)
    assert all(layout == layouts[0] for layout in layouts)


def test_progress_shows_the_split_of_a_full_batch(small_data, capsys):  # noqa: F811
    """The epoch's short last batch (2048 = 5 x 384 + 128) does not replace the split the
    progress line shows: it stays that of a full batch."""
    cfg = TrainConfig(model="mlp", data=small_data, epochs=1, batch_size=384, seed=5,
                      devices=",".join(str(d.index) for d in DEVICES[:2]))
    Trainer(cfg).run()
    line = next(l for l in capsys.readouterr().err.splitlines() if l.startswith("epoch 1/1 ["))
    split = line.split(" split ")[1].split()[0]
    assert sum(int(s) for s in split.split("/")) == 384, line
