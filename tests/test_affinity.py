"""affinity.py: the host thread that feeds a GPU runs on one core while it trains."""
import os
import threading
import types

import pytest

from hetcl.backend.affinity import chosen_core, host_thread_pinned, leave_pinned_core
from hetcl.backend.device import select_devices
from hetcl.errors import HetclError

from test_train import cfg, small_data  # noqa: F401  (a fixture)

CORES = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else set()
several_cores = pytest.mark.skipif(len(CORES) < 2, reason="needs a thread allowed on 2+ cores")


def fake_device(pin):
    return types.SimpleNamespace(features={"pin_host": pin}, context=None)


def test_the_last_allowed_core_by_default():
    assert chosen_core({0, 1, 2, 3}, "auto") == 3
    assert chosen_core({2, 9}, "") == 9
    assert chosen_core({4}, "auto") is None  # one core: nothing to choose
    assert chosen_core({0, 1}, "off") is None
    assert chosen_core({0, 1, 5}, "5") == 5


def test_a_core_the_process_may_not_use_is_a_clear_error():
    with pytest.raises(HetclError, match=r"HETCL_PIN_HOST='7'.*\(0-2,5\)"):
        chosen_core({0, 1, 2, 5}, "7")
    with pytest.raises(HetclError, match="off, auto or one of the cores"):
        chosen_core({0, 1}, "fast")


@several_cores
def test_pinned_inside_and_given_back_after(monkeypatch):
    monkeypatch.delenv("HETCL_PIN_HOST", raising=False)
    with host_thread_pinned([fake_device(False), fake_device(True)]) as core:
        assert core == max(CORES)
        assert os.sched_getaffinity(0) == {core}
    assert os.sched_getaffinity(0) == CORES


@several_cores
def test_given_back_after_an_error():
    with pytest.raises(RuntimeError):
        with host_thread_pinned([fake_device(True)]):
            raise RuntimeError("a step failed")
    assert os.sched_getaffinity(0) == CORES


@several_cores
def test_only_the_calling_thread_is_pinned():
    go, seen = threading.Event(), {}

    def other():
        go.wait()
        seen["cores"] = os.sched_getaffinity(0)
    t = threading.Thread(target=other)
    t.start()
    with host_thread_pinned([fake_device(True)]) as core:
        assert os.sched_getaffinity(0) == {core}
        go.set()
        t.join()
    assert seen["cores"] == CORES


@several_cores
def test_a_helper_started_while_pinned_leaves_the_pinned_core(monkeypatch):
    """A thread started by the pinned one inherits its core; leave_pinned_core moves it to the
    others (a streamed set's row gather), and does nothing where no thread is pinned."""
    monkeypatch.delenv("HETCL_PIN_HOST", raising=False)
    seen = {}

    def helper(name):
        leave_pinned_core()
        seen[name] = os.sched_getaffinity(0)
    with host_thread_pinned([fake_device(True)]) as core:
        t = threading.Thread(target=helper, args=("pinned",))
        t.start()
        t.join()
    t = threading.Thread(target=helper, args=("free",))
    t.start()
    t.join()
    assert seen == {"pinned": CORES - {core}, "free": CORES}


@several_cores
def test_not_pinned_for_cpu_devices_off_or_under_mpi(monkeypatch):
    # PoCL's CPU devices (every device here) do not ask for it: their workers compute.
    devices = [d for d in select_devices("all") if d.kind == "cpu"]
    assert devices and not any(d.features["pin_host"] for d in devices)
    with host_thread_pinned(devices) as core:
        assert core is None and os.sched_getaffinity(0) == CORES
    with host_thread_pinned([fake_device(True)], world=object()) as core:
        assert core is None and os.sched_getaffinity(0) == CORES
    monkeypatch.setenv("HETCL_PIN_HOST", "off")
    with host_thread_pinned([fake_device(True)]) as core:
        assert core is None and os.sched_getaffinity(0) == CORES
    monkeypatch.setenv("HETCL_PIN_HOST", str(min(CORES)))
    with host_thread_pinned([fake_device(True)]) as core:
        assert core == min(CORES) and os.sched_getaffinity(0) == {core}


@several_cores
def test_training_and_benchmark_steps_run_pinned(monkeypatch, small_data):
    """A device that asks for it (here a PoCL device told so) gets its steps from one core,
    in `hetcl train` and in the benchmarks' timed windows; the thread is free again after."""
    from hetcl.measure.bench import TrainLoop
    from hetcl.parallel.runtime import Runtime
    from hetcl.training.train import Trainer
    monkeypatch.delenv("HETCL_PIN_HOST", raising=False)
    device = select_devices("0")[0]
    monkeypatch.setitem(device.features, "pin_host", True)
    seen = []
    real = Runtime.train_step_indices

    def step(self, *args, **kwargs):
        seen.append(os.sched_getaffinity(0))
        return real(self, *args, **kwargs)
    monkeypatch.setattr(Runtime, "train_step_indices", step)
    loop = TrainLoop("mlp", [device], 64, warmup=1)
    warm = len(seen)
    loop.rate(3, min_seconds=0)
    assert seen[warm:] == [{max(CORES)}] * 3
    trainer = Trainer(cfg(small_data, epochs=1, batch_size=512), runtime=Runtime([device]))
    seen.clear()
    trainer.run()
    assert seen == [{max(CORES)}] * 4  # 2048 samples, batches of 512
    assert os.sched_getaffinity(0) == CORES


@several_cores
def test_a_core_the_os_refuses_leaves_the_thread_where_it_is(monkeypatch):
    def refuse(pid, cores):
        raise OSError(22, "Invalid argument")
    monkeypatch.setattr(os, "sched_setaffinity", refuse)
    with host_thread_pinned([fake_device(True)]) as core:
        assert core is None and os.sched_getaffinity(0) == CORES
