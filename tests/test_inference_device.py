"""Where evaluation and prediction run (parallel/inference.py: inference_device): the fastest
device the scheduler has measured, else the earliest kind - a GPU before a CPU listed first."""
import types

import numpy as np
import pytest

import hetcl
from conftest import DEVICES
from hetcl.model.models import build_model
from hetcl.model.optim import SGD
from hetcl.parallel.inference import inference_device


def fake(*kinds):
    return [types.SimpleNamespace(profile={"kind": k}, name=f"{k}{i}")
            for i, k in enumerate(kinds)]


def test_unmeasured_devices_rank_by_kind_then_position():
    devices = fake("cpu", "igpu", "dgpu", "dgpu")
    assert inference_device(devices, set(), [None] * 4) is devices[2]
    assert inference_device(devices, {2}, [None] * 4) is devices[3]
    assert inference_device(devices, {2, 3}, [None] * 4) is devices[1]
    assert inference_device(fake("cpu", "cpu"), set(), [None, None]).name == "cpu0"
    # a kind outside KIND_ORDER comes last, not first
    assert inference_device(fake("fpga", "cpu"), set(), [None, None]).name == "cpu1"


def test_measured_devices_rank_by_speed_among_those_left():
    devices = fake("dgpu", "cpu", "cpu")
    assert inference_device(devices, set(), [900.0, 1000.0, 50.0]) is devices[1]
    assert inference_device(devices, {1}, [900.0, 1000.0, 50.0]) is devices[0]
    # one of those left not measured: the kinds decide
    assert inference_device(devices, set(), [None, 1000.0, 50.0]) is devices[0]
    # equal speeds: the first
    assert inference_device(devices, {0}, [None, 7.0, 7.0]) is devices[1]


@pytest.mark.skipif(len(DEVICES) < 2, reason="needs two OpenCL devices")
def test_after_training_evaluation_runs_on_the_faster_device():
    """Two uneven PoCL devices: after steps the scheduler has timed, evaluation's executor is
    on the device it measured faster, and its predictions are those of a one-device run."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (64, 1, 28, 28), dtype=np.uint8)
    labels = rng.integers(0, 10, 64).astype(np.uint8)
    model = build_model("mlp", (1, 28, 28), 10, 0)
    rt, opt = hetcl.Runtime("all"), SGD(0.05, 0.9)
    for step in range(4):
        rt.train_step_indices(model, opt, images, labels,
                              np.arange(step * 16, step * 16 + 32, dtype=np.int32) % 64)
    speeds = rt.scheduler.speed
    assert all(s is not None for s in speeds)
    chosen = rt.inference_device()
    assert chosen is rt.devices[int(np.argmax(speeds))]
    used, executor = [], rt.executor
    rt.executor = lambda m, device, n: used.append(device) or executor(m, device, n)
    preds = rt.evaluate_indices(model, images, labels, batch_size=32)
    assert used == [chosen]
    one = hetcl.Runtime(DEVICES[0]).evaluate_indices(model, images, labels, batch_size=32)
    assert np.array_equal(preds, one)
