"""Batch norm layers (BatchNorm2D, BatchNorm1D) in models, and resnet20: against PyTorch from
the same weights on the same batches (training-mode loss, gradients, steps, running
statistics; evaluation-mode outputs), the whole batch's statistics when the batch is split
over two uneven devices (== one device, running statistics included), and one-line errors.

Trajectories of 20 steps are compared on resnet20's graph with sigmoids in place of its
ReLUs ("smooth"): batch norm centres each ReLU's input on 0, and there a rounding difference
(another summation order: another device split, or PyTorch's kernels) now and then puts an
input on the other side of the kink, which changes its gradient from 0 to whole; a deep net
trained on small batches then carries that apart (docs/benchmarks.md, "Batch norm: N devices
== 1 device and ReLU's kink"). The ReLU network itself is checked on one step's loss, running
statistics and evaluation outputs."""
import contextlib

import numpy as np
import pytest

import hetcl
from conftest import DEVICES
from hetcl.backend.device import Device
from hetcl.errors import HetclError
from hetcl.layers import (BatchNorm1D, BatchNorm2D, Conv2D, Dense, Flatten, MaxPool2D, ReLU,
                          Sigmoid)
from hetcl.model.models import resnet20
from hetcl.model.layers import ReLU as ReLULayer

torch = pytest.importorskip("torch")
from torch_twin import TorchTwin  # noqa: E402
from test_train import small_data  # noqa: E402,F401  (fixture)

F = torch.nn.functional
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

TOL = 1e-4


def bn_net(seed=0):
    """Both layers, with and without a fused ReLU, a sigmoid, a conv with and without bias."""
    return hetcl.Sequential([
        Conv2D(3, 6, 3, padding=1, bias=False), BatchNorm2D(6), ReLU(), MaxPool2D(2),
        Conv2D(6, 5, 3), BatchNorm2D(5), Sigmoid(), Flatten(),
        Dense(5 * 3 * 3, 17), BatchNorm1D(17), ReLU(), Dense(17, 7), BatchNorm1D(7),
        Dense(7, 4)], seed=seed, input_shape=(3, 10, 10)).build()


def smooth_resnet20(shape, seed):
    """resnet20 with a sigmoid wherever it has a ReLU (see the module docstring)."""
    graph = resnet20(shape, 10, seed)
    for node in graph.nodes[1:]:
        if isinstance(node.layer, ReLULayer):
            node.layer = Sigmoid()
    return graph.build()


def batch(n, seed, shape=(3, 10, 10), classes=4):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((n,) + shape).astype(np.float32) * 2 + 0.5,
            rng.integers(0, classes, n))


def rel(a, b):
    """The difference relative to b's norm, or absolute where that is below 1 (a conv's bias
    before batch norm has no gradient but rounding noise, and stays near 0)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.linalg.norm(a - b) / max(np.linalg.norm(b), 1.0)


def torch_step(ref, opt, x, y):
    opt.zero_grad()
    loss = F.cross_entropy(ref(torch.tensor(x)), torch.tensor(y))
    loss.backward()
    opt.step()
    return loss.item()


def check_trajectory(device, model, optimizer, kwargs, steps, shape, classes, n, param_tol):
    """`steps` training steps of hetcl and of its torch twin: every loss within TOL, then
    every parameter and running statistic within param_tol (relative, whole tensor), then
    the evaluation-mode outputs."""
    ref = TorchTwin(model)
    opt = getattr(hetcl.optim, optimizer)(**kwargs)
    ref_opt = getattr(torch.optim, optimizer)(ref.parameters(), **kwargs)
    rt = hetcl.Runtime([device])
    for step in range(steps):
        x, y = batch(n, 100 + step, shape, classes)
        loss = rt.train_step(model, opt, x, y)
        ref_loss = torch_step(ref, ref_opt, x, y)
        assert abs(loss - ref_loss) < TOL * max(1.0, ref_loss), step
    theirs = ref.named_tensors()
    for name, v in model.parameters().items():
        assert rel(v, theirs[name]) < param_tol, name
    x, _ = batch(9, 7, shape, classes)
    ref.eval()
    with torch.no_grad():
        expect = ref(torch.tensor(x)).numpy()
    assert rel(rt.forward(model, x), expect) < TOL


def test_bn_layers_train_like_torch(device):
    check_trajectory(device, bn_net(), "SGD", dict(lr=0.1, momentum=0.9), 10, (3, 10, 10),
                     4, 7, 1e-4)


def test_bn_gradients_match_torch_batch_1_images(device):
    """Batch 1 is fine for BatchNorm2D (the statistics span the image)."""
    model = hetcl.Sequential([Conv2D(2, 3, 3), BatchNorm2D(3), ReLU(), Flatten(),
                              Dense(3 * 3 * 3, 5)], seed=1, input_shape=(2, 5, 5)).build()
    ref = TorchTwin(model)
    x, y = batch(1, 4, (2, 5, 5), 5)
    loss, grads = hetcl.Runtime([device]).gradients(model, x, y)
    ref_loss = F.cross_entropy(ref(torch.tensor(x)), torch.tensor(y))
    ref_loss.backward()
    assert abs(loss - ref_loss.item()) < TOL * ref_loss.item()
    for name, p in ref.layers.named_parameters():
        assert rel(grads[name], p.grad.numpy()) < TOL, name


@pytest.mark.parametrize("optimizer,kwargs,param_tol", [
    ("SGD", dict(lr=0.05, momentum=0.9), 1e-5),
    # Adam moves each element by about lr whatever its gradient's size, so the rounding
    # noise of a tiny gradient becomes a step of its own (test_adam.py measures it)
    ("AdamW", dict(lr=1e-3, weight_decay=0.05), 1e-4)])
def test_resnet20_trains_like_torch(device, optimizer, kwargs, param_tol):
    """20 steps of (smooth) resnet20 on 12x12x1 images, batch 8."""
    check_trajectory(device, smooth_resnet20((1, 12, 12), 3), optimizer, kwargs, 20,
                     (1, 12, 12), 10, 8, param_tol)


@pytest.mark.skipif(not DEVICES, reason="no OpenCL device")
def test_resnet20_step_matches_torch():
    """resnet20 itself on 28x28x1: one training-mode step's loss and the running statistics it
    leaves (as PyTorch's forward does), and the evaluation-mode outputs. (Its gradients:
    through the smooth twin above - see the module docstring.) On the first device only: its
    28x28 shapes are compiled for this test alone, and the kernels are checked on every device
    by the tests above."""
    device = DEVICES[0]
    model = resnet20((1, 28, 28), 10, seed=4).build()
    ref = TorchTwin(model)
    x, y = batch(8, 11, (1, 28, 28), 10)
    rt = hetcl.Runtime([device])
    loss, _ = rt.gradients(model, x, y)
    ref_loss = F.cross_entropy(ref(torch.tensor(x)), torch.tensor(y))
    assert abs(loss - ref_loss.item()) < TOL * ref_loss.item()
    theirs = ref.named_tensors()
    for name in model.running_names():
        assert rel(model.parameters()[name], theirs[name]) < TOL, name
    ref.eval()
    with torch.no_grad():
        assert rel(rt.forward(model, x), ref(torch.tensor(x)).numpy()) < TOL


def fresh_pair():
    return [Device(d.cl_device, dict(d.profile)) for d in DEVICES[:2]]


@pytest.mark.skipif(len(DEVICES) < 2, reason="needs two devices (POCL_DEVICES='pthread basic')")
@pytest.mark.parametrize("build,shape,classes", [
    (bn_net, (3, 10, 10), 4), (lambda seed: smooth_resnet20((1, 12, 12), seed), (1, 12, 12), 10)])
def test_two_uneven_devices_equal_one(build, shape, classes):
    """The statistics are the whole batch's: 20 steps split 13/3 (and one step on one device
    alone) give the parameters and running statistics of one device."""
    out = []
    for devices, split in ((fresh_pair()[:1], None), (fresh_pair(), [13, 3])):
        model, rt = build(seed=5), hetcl.Runtime(devices)
        opt = hetcl.optim.SGD(lr=0.05, momentum=0.9)
        for step in range(20):
            x, y = batch(16, 200 + step, shape, classes)
            rt.train_step(model, opt, x, y, split=[16, 0] if split and step == 7 else split)
        out.append(model.parameters())
    for name in out[0]:
        assert rel(out[1][name], out[0][name]) < 1e-5, name


@pytest.mark.skipif(len(DEVICES) < 2, reason="needs two devices (POCL_DEVICES='pthread basic')")
def test_a_step_redone_after_a_device_fault_blends_running_statistics_once(monkeypatch):
    """The second device fails at the end of the third step, after both devices' batch norms
    blended the batch's statistics into their running ones: the step, redone on the first
    device, starts again from the running statistics of before it, so the run ends where one
    on the first device alone does (parameters and running statistics)."""
    from hetcl.engine.executor import Executor
    from hetcl.errors import DeviceFault, DeviceWarning
    enqueue_step = Executor.enqueue_step

    def failing_at_the_end(ex, *args, **kwargs):
        yield from enqueue_step(ex, *args, **kwargs)
        raise DeviceFault("fails after its backward pass")

    def maybe_failing(ex, *args, **kwargs):
        fails = ex.replica.device is rt.devices[-1] and rt.steps == 2 and len(rt.devices) > 1
        return (failing_at_the_end if fails else enqueue_step)(ex, *args, **kwargs)
    monkeypatch.setattr(Executor, "enqueue_step", maybe_failing)
    out = []
    for devices in (fresh_pair()[:1], fresh_pair()):
        model, rt = bn_net(seed=5), hetcl.Runtime(devices, adaptive=False)
        # an even split while both devices are alive: split by measured speed, a loaded host's
        # slow device got no samples (under one granule) and nothing failed
        monkeypatch.setattr(rt.scheduler, "split", lambda n: [n // 2, n - n // 2])
        opt = hetcl.optim.SGD(lr=0.05, momentum=0.9)
        with pytest.warns(DeviceWarning) if len(devices) > 1 else contextlib.nullcontext():
            for step in range(4):
                rt.train_step(model, opt, *batch(16, 300 + step))
        out.append(model.parameters())
    assert rt.failed == {1} and rt.steps == 4
    for name in out[0]:
        assert rel(out[1][name], out[0][name]) < 1e-5, name


def test_one_value_per_channel_is_a_clear_error(device):
    model = hetcl.Sequential([Dense(4, 3), BatchNorm1D(3), Dense(3, 2)], seed=0,
                             input_shape=(4,)).build()
    rt = hetcl.Runtime([device])
    with pytest.raises(HetclError, match="one value") as e:
        rt.train_step(model, hetcl.optim.SGD(lr=0.1), np.ones((1, 4), np.float32), [0])
    assert "\n" not in str(e.value)
    assert rt.forward(model, np.ones((1, 4), np.float32)).shape == (1, 2)  # evaluation is fine


def test_bad_settings_are_clear_errors():
    with pytest.raises(HetclError, match="momentum"):
        BatchNorm2D(4, momentum=1.5)
    with pytest.raises(HetclError, match="expects input shape"):
        hetcl.Sequential([BatchNorm2D(4)], input_shape=(3, 5, 5)).build()


def test_checkpoint_resumes_bit_exact_with_bn_and_adam(device, tmp_path):
    """4 AdamW steps of resnet20 == 2 steps, a checkpoint (parameters, running statistics,
    both Adam buffers, the step count), a fresh runtime and model, then 2 steps."""
    from hetcl.training import checkpoint

    def train(model, opt, rt, steps):
        for step in steps:
            rt.train_step(model, opt, *batch(8, 300 + step, (1, 12, 12), 10))
    shape = (1, 12, 12)
    whole, opt = resnet20(shape, 10, seed=6).build(), hetcl.optim.AdamW(1e-3)
    train(whole, opt, hetcl.Runtime([device]), range(4))
    half, opt2, rt2 = resnet20(shape, 10, seed=6).build(), hetcl.optim.AdamW(1e-3), \
        hetcl.Runtime([device])
    train(half, opt2, rt2, range(2))
    checkpoint.save(str(tmp_path), half.parameters(), rt2.optimizer_state(half),
                    {"optimizer_steps": opt2.steps})
    params, state, meta = checkpoint.load(str(tmp_path))
    resumed, opt3, rt3 = resnet20(shape, 10, seed=7).build(), hetcl.optim.AdamW(1e-3), \
        hetcl.Runtime([device])
    resumed.load_parameters(params)
    rt3.load_optimizer_state(resumed, state)
    opt3.steps = meta["optimizer_steps"]
    train(resumed, opt3, rt3, range(2, 4))
    assert any(k.endswith("running_var") for k in params)
    for name, v in whole.parameters().items():
        assert np.array_equal(resumed.parameters()[name], v), name
    # parameters saved from a model without batch norm's running statistics
    with pytest.raises(HetclError, match="lack the running statistics of batch norm") as e:
        resumed.load_parameters({k: v for k, v in params.items() if "running" not in k})
    assert "\n" not in str(e.value)


@pytest.mark.skipif(len(DEVICES) < 2, reason="needs two devices (POCL_DEVICES='pthread basic')")
def test_hybrid_parallelism_equals_data_with_bn():
    """The layers before the dense tail (batch norm among them) run data-parallel with the
    whole batch's statistics, the tail model-parallel: the same steps as data parallelism."""
    out = []
    for parallel in ("data", "hybrid"):
        model, rt = bn_net(seed=8), hetcl.Runtime(fresh_pair(), parallel=parallel)
        opt = hetcl.optim.SGD(lr=0.05, momentum=0.9)
        for step in range(5):
            rt.train_step(model, opt, *batch(16, 400 + step), split=[11, 5])
        assert rt.modes()[model] == parallel
        out.append(model.parameters())
    for name in out[0]:
        assert rel(out[1][name], out[0][name]) < 1e-5, name


def test_train_and_evaluate_resnet20_from_the_command_line(small_data, tmp_path):  # noqa: F811
    """`hetcl train --model resnet20` for an epoch of 2048 Fashion-MNIST images learns (chance
    is 10%), and `hetcl evaluate` of its checkpoint (evaluation mode: the saved running
    statistics) gives the accuracy the run reported."""
    from click.testing import CliRunner
    from hetcl.cli import main
    from test_train import cfg, run
    _, history = run(cfg(small_data, tmp_path, model="resnet20", epochs=1, batch_size=64))
    assert history[-1]["test_acc"] > 0.4
    result = CliRunner().invoke(main, ["evaluate", "--checkpoint", str(tmp_path / "ckpt"),
                                       "--data", small_data, "--devices", "0"])
    assert result.exit_code == 0, result.output
    assert f"test accuracy {100 * history[-1]['test_acc']:.2f}%" in result.output
