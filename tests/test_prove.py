"""Proving kernel variants (hetcl/codegen/prove.py): a compiler that aborts, segfaults, hangs or
computes wrong costs a replacement variant and a line, never the run.

Faults are injected into the prover's child process with HETCL_PROVE_FAULT (prover.py). Every
test proves into its own cache directory on fresh Device objects (a Device keeps the programs
it has built in memory, and those are never proven again)."""
import json
import subprocess
import sys
import types
import warnings

import numpy as np
import pytest
from click.testing import CliRunner

import hetcl
from hetcl.measure import check
from hetcl.cli import main
from hetcl.codegen import launch, prove, verdicts
from hetcl.codegen.gemm import gemm
from hetcl.codegen.gemm import GemmParams
from hetcl.backend.device import Device, list_devices, parse_selection
from hetcl.backend.host_cpu import same_host_cpu
from hetcl.errors import DeviceWarning, VariantWarning
from hetcl.training.train import TrainConfig, Trainer
from conftest import DEVICES, subprocess_env
from test_train import small_data  # noqa: F401  (fixture)

pytestmark = pytest.mark.skipif(not DEVICES, reason="no OpenCL device")


@pytest.fixture
def proving(tmp_path, monkeypatch):
    """A cache of its own, proving on, no fault yet."""
    monkeypatch.setenv("HETCL_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HETCL_PROVE", "1")
    monkeypatch.delenv("HETCL_PROVE_FAULT", raising=False)
    return tmp_path


def fresh(i=0):
    d = DEVICES[i]
    return Device(d.cl_device, dict(d.profile))


def first_gemm_fault(device, kind):
    """A fault on the vector width every default GEMM of `device` starts from."""
    return f"{kind}:gemm.cl.mako:VWN={GemmParams.defaults(device.features).VWN},"


def train_mlp(small_data, devices, **over):
    cfg = TrainConfig(model="mlp", data=small_data, epochs=1, batch_size=128, lr=0.05, seed=3,
                      progress=False, **over)
    trainer = Trainer(cfg, runtime=hetcl.Runtime(devices))
    return trainer, trainer.run()


def test_an_aborting_variant_is_replaced_and_training_gives_the_same_numbers(
        proving, monkeypatch, small_data):
    _, reference = train_mlp(small_data, [fresh()])
    monkeypatch.setenv("HETCL_CACHE_DIR", str(proving / "cache2"))
    device = fresh()
    monkeypatch.setenv("HETCL_PROVE_FAULT", first_gemm_fault(device, "abort"))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer, history = train_mlp(small_data, [device])
    said = [str(w.message) for w in caught if w.category is VariantWarning]
    assert said and all("the compiler crashed (SIGABRT)" in m for m in said)
    assert any(r[0] is device for r in launch.replaced)
    assert abs(history[0]["train_loss"] - reference[0]["train_loss"]) <= 1e-5
    assert history[0]["test_acc"] == reference[0]["test_acc"]


@pytest.mark.parametrize("kind,reason", [("segv", "the compiler crashed (SIGSEGV)"),
                                         ("wrong", "computes wrong"),
                                         ("hang", "hung: no result in 2 s")])
def test_each_fault_kind_is_a_verdict_and_the_next_variant_computes(
        proving, monkeypatch, kind, reason):
    device = fresh()
    a = np.random.default_rng(0).standard_normal((37, 29)).astype(np.float32)
    broken = GemmParams.for_shape(device.features, 37, 37, 29)
    if kind == "hang":  # prove the replacement first: only the hanging proof meets the timeout
        gemm(device, a, a.T, params=broken.fallbacks(device.features)[0])
        monkeypatch.setenv("HETCL_PROVE_TIMEOUT", "2")
    monkeypatch.setenv("HETCL_PROVE_FAULT", f"{kind}:gemm.cl.mako:{broken}")
    out = gemm(device, a, a.T, params=broken)
    assert np.allclose(out, a @ a.T, rtol=1e-4, atol=1e-4)
    found = [r for r in verdicts.broken(device) if r[1] == str(broken)]
    assert len(found) == 1 and reason in found[0][2]


SECOND_RUN = """
import json, numpy as np
from hetcl.backend.device import list_devices
from hetcl.codegen import cache, launch, prove
from hetcl.codegen.gemm import gemm
d = list_devices()[0]
a = np.random.default_rng(0).standard_normal((37, 29)).astype(np.float32)
ok = bool(np.allclose(gemm(d, a, a.T), a @ a.T, rtol=1e-4, atol=1e-4))
print(json.dumps(dict(prove.stats, replaced=len(launch.replaced), ok=ok)))
"""


def test_a_second_run_reads_the_verdicts_and_proves_nothing(proving):
    device = list_devices()[0]
    env = subprocess_env(HETCL_CACHE_DIR=str(proving / "cache"),
                         HETCL_PROVE_FAULT=first_gemm_fault(device, "abort"))
    runs = [json.loads(subprocess.run([sys.executable, "-c", SECOND_RUN], env=env, check=True,
                                      capture_output=True, text=True).stdout.splitlines()[-1])
            for _ in range(2)]
    assert runs[0]["ok"] and runs[0]["replaced"] == 1 and runs[0]["proved"] >= 2
    assert runs[1]["ok"] and runs[1]["replaced"] == 1 and runs[1]["proved"] == 0


@pytest.mark.skipif(len(DEVICES) < 2, reason="needs two devices (POCL_DEVICES='pthread basic')")
def test_a_kernel_with_no_working_variant_drops_its_device(proving, monkeypatch, small_data):
    devices = [fresh(0), fresh(1)]
    monkeypatch.setenv("HETCL_PROVE_FAULT", f"wrong:gemm.cl.mako::{devices[1].index}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer, history = train_mlp(small_data, devices, parallel="data")
    dropped = [str(w.message) for w in caught if w.category is DeviceWarning]
    assert len(dropped) == 1 and "\n" not in dropped[0]
    assert "no variant of gemm.cl.mako works on" in dropped[0] and "computes wrong" in dropped[0]
    assert trainer.rt.failed == {1} and np.isfinite(history[0]["train_loss"])
    assert history[0]["test_acc"] > 0.5


def test_no_working_variant_on_the_only_device_is_one_line(proving, monkeypatch, small_data):
    monkeypatch.setenv("HETCL_PROVE_FAULT", "wrong:gemm.cl.mako")
    with pytest.raises(hetcl.errors.HetclError) as info:
        train_mlp(small_data, [fresh()])
    assert "no variant of gemm.cl.mako works" in str(info.value) and "\n" not in str(info.value)


def test_devices_check_shows_a_replaced_variant(proving, monkeypatch):
    device = fresh()
    monkeypatch.setattr("hetcl.backend.device.list_devices", lambda: [device])
    monkeypatch.setattr(check, "CHECK_MODELS", ("mlp",))
    monkeypatch.setenv("HETCL_PROVE_FAULT", first_gemm_fault(device, "abort"))
    out = CliRunner().invoke(main, ["devices", "--check", "--json"])
    assert out.exit_code == 0, out.output
    result = json.loads(out.stdout)[0]
    assert result["verdict"] == "replaced" and result["proved"] > 0
    assert result["replaced"][0]["template"] == "gemm.cl.mako"
    assert "SIGABRT" in result["replaced"][0]["reason"]
    monkeypatch.delenv("HETCL_PROVE_FAULT")
    again = check.check_device(fresh())  # verdicts on disk: the same answer, nothing proven
    assert again["verdict"] == "replaced" and again["proved"] == 0


def test_vector_width_follows_what_the_compiler_builds(proving, monkeypatch):
    width = fresh().features["vector_width"]
    assert width in (1, 2, 4, 8, 16)
    monkeypatch.setenv("HETCL_CACHE_DIR", str(proving / "cache2"))
    monkeypatch.setenv("HETCL_PROVE_FAULT", "wrong:vector_probe.cl.mako:VW=16")
    device = fresh()
    assert device.features["vector_width"] == min(width, 8)
    if not device.features["simt"]:  # the CPU defaults keep to it
        assert GemmParams.defaults(device.features).VWN <= 8


def test_corrupt_verdicts_are_proven_again(proving):
    device = fresh()
    gemm(device, np.ones((3, 3), np.float32), np.ones((3, 3), np.float32))
    path = proving / "cache" / "verdicts" / f"{device.fingerprint}.json"
    path.write_text("{not json")
    verdicts._loaded.clear()
    before = prove.stats["proved"]
    out = gemm(fresh(), np.ones((3, 3), np.float32), np.ones((3, 3), np.float32))
    assert np.allclose(out, 3) and prove.stats["proved"] > before
    assert json.loads(path.read_text())["format"] == verdicts.FORMAT


@pytest.mark.parametrize("proof", ["1", "0"])
def test_compiler_warnings_stay_out_of_the_terminal(tmp_path, proof):
    """The vector probe draws warnings where the compiler targets narrower vectors (this
    kernel's 16-wide arguments on an AVX2 target); they show only with HETCL_DEBUG."""
    env = subprocess_env(HETCL_CACHE_DIR=str(tmp_path / proof), HETCL_PROVE=proof)
    run = lambda: subprocess.run([sys.executable, "-m", "hetcl", "devices", "--json"], env=env,
                                 capture_output=True, text=True, check=True)
    quiet = run()
    assert "warning" not in quiet.stderr.lower(), quiet.stderr
    assert json.loads(quiet.stdout)[0]["features"]["vector_width"] in (1, 2, 4, 8, 16)


def cpu(index, platform, driver):
    profile = {"index": index, "platform_index": platform, "device_index": 0, "kind": "cpu",
               "name": f"cpu{index}", "driver_version": driver, "platform": "PoCL"}
    return types.SimpleNamespace(profile=profile)


def test_one_cpu_from_two_platforms_is_used_once():
    machine = [cpu(0, 0, "3.0-rc2"), cpu(1, 1, "3.1+debian")]
    assert same_host_cpu(machine) == [(machine[0], machine[1])]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert parse_selection("all", machine) == [machine[1]]
        assert parse_selection("cpu", machine) == [machine[1]]
    assert any("same CPU as device 1" in str(w.message) for w in caught)
    assert parse_selection("0", machine) == [machine[0]]  # named: used
    assert same_host_cpu([cpu(0, 0, "3.1"), cpu(1, 0, "3.1")]) == []  # one platform
