"""The `hetcl` command: output, JSON, benchmarks and one-line errors."""
import json
import subprocess
import sys

from click.testing import CliRunner

from hetcl.cli import main
from hetcl.backend.device import list_devices
from conftest import subprocess_env



def invoke(*args):
    return CliRunner().invoke(main, list(args))


def test_devices_table_lists_every_device():
    result = invoke("devices")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:4] == ["#", "P:D", "kind", "name"]
    for d in list_devices():
        assert any(line.startswith(f"{d.index} ") and d.name in line and d.kind in line
                   and d.profile["driver_version"] in line for line in lines)


def test_devices_json_is_complete():
    result = invoke("devices", "--json")
    assert result.exit_code == 0
    data = json.loads(result.output)
    assert [d["index"] for d in data] == [d.index for d in list_devices()]
    for entry in data:
        for key in ("platform", "name", "kind", "compute_units", "clock_mhz", "global_mem_bytes",
                    "local_mem_bytes", "max_work_group_size", "fp64", "driver_version",
                    "fingerprint", "features"):
            assert key in entry


def test_devices_bench_measures_real_numbers():
    last = list_devices()[-1].index
    result = invoke("devices", "--devices", str(last), "--bench", "--json")
    assert result.exit_code == 0, result.output
    entry = json.loads(result.output[result.output.index("["):])[0]
    assert entry["gflops"] > 0.1 and entry["h2d_gbs"] > 0.01 and entry["d2h_gbs"] > 0.01


def test_unknown_device_is_one_line_error():
    result = invoke("devices", "--devices", "7")
    assert result.exit_code == 1
    assert result.output.count("\n") == 1
    assert result.output.startswith("hetcl: error: no device matches '7'. Devices: 0 = 0:0")
    assert "Traceback" not in result.output


def test_missing_platform_is_one_line_error():
    """A machine with no OpenCL driver: the ICD loader finds no vendor files."""
    code = ("import os, pyopencl, tempfile; d = tempfile.mkdtemp(); "
            "os.environ['PYOPENCL_HOME'] = d; os.environ['OCL_ICD_VENDORS'] = d; "
            "from hetcl.cli import main; main(['devices'], prog_name='hetcl')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=subprocess_env())
    assert out.returncode == 1
    assert out.stderr.strip() == (
        "hetcl: error: no OpenCL platform found: install one - `pip install hetcl[pocl]` gives "
        "a CPU device, or install your GPU vendor's OpenCL driver")
    assert out.stdout == ""


def test_help_explains_selection():
    result = invoke("devices", "--help")
    assert result.exit_code == 0
    assert "P:D" in result.output and "igpu" in result.output


def test_bench_times_each_device_and_all_together():
    """`hetcl bench --devices all` over two devices: a row per device and one together, each
    with a measured images/s (the multi-device warm-up runs until the split has settled)."""
    import pytest
    if len(list_devices()) < 2:
        pytest.skip("needs two OpenCL devices (POCL_DEVICES='pthread basic')")
    result = invoke("bench", "--devices", "all", "--model", "mlp", "--batch-size", "32",
                    "--steps", "3")
    assert result.exit_code == 0, result.output
    rows = [line.split() for line in result.output.splitlines() if line.startswith("mlp ")]
    assert len(rows) == len(list_devices()) + 1 and "together," in rows[-1]
    rates = [float(next(w for w in row if w.replace(".", "").isdigit() and "/" not in w
                        and not w.endswith(":"))) for row in rows]
    assert all(rate > 0 for rate in rates), result.output
    # --rounds: alone and together in turn, medians, and each round's own ratio
    result = invoke("bench", "--devices", "all", "--model", "mlp", "--batch-size", "32",
                    "--steps", "2", "--rounds", "2")
    assert result.exit_code == 0, result.output
    assert "medians of 2 rounds" in result.output
    per_round = next(line for line in result.output.splitlines()
                     if line.startswith("mlp, data: per round "))
    assert len([x for x in per_round.split("per round ")[1].split(", ") if x.endswith("x")]) == 2


def test_bench_says_when_the_split_never_settled(monkeypatch):
    """A scheduler still in a trial after the 400-step warm-up cap is timed anyway, and the
    output says so (the figure may include the trial)."""
    import pytest
    from hetcl.parallel.scheduler import Scheduler
    if len(list_devices()) < 2:
        pytest.skip("needs two OpenCL devices (POCL_DEVICES='pthread basic')")
    monkeypatch.setattr(Scheduler, "_explore", lambda self: setattr(self, "trial", (0, (), [], {})))
    result = invoke("bench", "--devices", "all", "--model", "mlp", "--batch-size", "8",
                    "--steps", "2")
    assert result.exit_code == 0, result.output
    assert "bench: the scheduler had not settled after 400 warm-up steps" in result.output
    assert "trial running" in result.output


def test_bench_rounds_put_the_compared_windows_side_by_side(monkeypatch):
    """Each configuration is built (warmed up) once, then timed in windows: after a first
    round that finds the best device alone, the other devices run first and the best one and
    "together" back to back, every other round in reverse order (pure: the training loops are
    replaced by a recorder whose rates say which device is best)."""
    from types import SimpleNamespace
    import hetcl.measure.bench as bench
    built, calls = [], []

    class FakeLoop:
        def __init__(self, name, devices, batch_size, parallel="data"):
            self.what = "together" if len(devices) > 1 else devices[0].name
            built.append(self.what)
            self.rt = SimpleNamespace(last_split=[1, 1], last_bytes=8)
            self.messages = [f"from {self.what}"]

        def rate(self, steps):
            calls.append(self.what)
            return {"a": 1.0, "b": 10.0}.get(self.what, 5.0) + len(calls) / 100
    monkeypatch.setattr(bench, "TrainLoop", FakeLoop)
    devs = [SimpleNamespace(index=0, name="a"), SimpleNamespace(index=1, name="b")]
    notes = []
    alone, together, last = bench.alone_and_together("mlp", devs, ["data"], 32, 2, 3, notes)
    assert built == ["a", "b", "together"]
    assert calls == ["a", "b", "together",
                     "a", "b", "together",  # b is the best alone: it and together side by side
                     "a", "together", "b"]  # reversed
    assert alone == {0: [1.01, 1.04, 1.07], 1: [10.02, 10.05, 10.09]}
    assert together == {"data": [5.03, 5.06, 5.08]}
    assert last == {"data": ([1, 1], 8)} and notes == ["from together"]


def test_train_help_says_what_each_model_is():
    out = CliRunner().invoke(main, ["train", "--help"]).output
    text = " ".join(out.split()).replace("- ", "-")  # (help wraps lines at hyphens)
    for name, what in [("lenet5", "LeCun's LeNet-5"), ("mlp", "784-256-128-10"),
                       ("cifar-cnn", "VGG-style for 32x32x3"),
                       ("cifar-cnn-wide", "cifar-cnn with Krizhevsky-sized dense layers")]:
        assert f"{name} ({what}" in text, name
