"""Shared fixtures: every OpenCL device present, and an isolated kernel cache per test session.

Locally and in CI the devices are PoCL's (POCL_DEVICES="pthread basic" gives two uneven CPU
devices); on the GPU machine NVIDIA's OpenCL device joins them.
"""
import os
import tempfile

import pytest

# Before hetcl reads it: tests never touch (or depend on) the user's kernel cache.
os.environ.setdefault("HETCL_CACHE_DIR", tempfile.mkdtemp(prefix="hetcl-test-cache-"))
# The kernel tests check every kernel against numpy themselves, so they build in-process:
# proving each first build in a child as well would repeat that check (its cost in the cold
# suite: docs/benchmarks.md, "Test suite").
# test_prove.py turns proving on, test_probes.py runs the probes, and tools/ci_pypi_pocl.sh
# proves on the PyPI PoCL build, whose compiler is the one known to crash.
os.environ.setdefault("HETCL_PROVE", "0")

from hetcl.tuning import tunedb  # noqa: E402
from hetcl.backend.device import list_devices  # noqa: E402
from hetcl.errors import NoPlatformError  # noqa: E402

try:
    DEVICES = list_devices()
    if os.environ.get("HETCL_TEST_DEVICES"):  # e.g. "gpu" on the GPU machine
        from hetcl.backend.device import parse_selection
        DEVICES = parse_selection(os.environ["HETCL_TEST_DEVICES"], DEVICES)
except NoPlatformError:
    DEVICES = []


def _device_id(d):
    return f"{d.index}-{d.kind}-{d.name.split()[0]}"


@pytest.fixture(params=DEVICES or [None], ids=[_device_id(d) for d in DEVICES] or ["none"])
def device(request):
    if request.param is None:
        pytest.skip("no OpenCL device")
    return request.param


@pytest.fixture
def gpu_device():
    gpus = [d for d in DEVICES if d.kind in ("igpu", "dgpu")]
    if not gpus:
        pytest.skip("no GPU OpenCL device present")
    return gpus[0]


@pytest.fixture
def fresh_db(tmp_path, monkeypatch):
    """A user tuning DB in a temporary cache dir and no shipped DB, so the test sees only
    its own."""
    monkeypatch.setenv("HETCL_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(tunedb, "SHIPPED", str(tmp_path / "shipped.json"))
    monkeypatch.setattr(tunedb, "_db", None)
    return tmp_path


# tests/reference.py is imported as `reference` by the kernel tests.
import sys  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def subprocess_env(**extra):
    """Environment for a child Python that must import this checkout's hetcl: the repository
    goes first on PYTHONPATH, whatever was there stays (e.g. where pyopencl is installed)."""
    path = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)
    return dict(os.environ, PYTHONPATH=path, **extra)
