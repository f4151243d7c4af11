"""Every kernel under Oclgrind (Debian package `oclgrind`): out-of-bounds accesses, data races,
uses of uninitialised values and OpenCL API misuse are reported by the simulator and fail the
test.

Kernels are built with -cl-opt-disable here: Oclgrind's uninitialised-value checker aborts on
the `freeze` instruction that LLVM's optimiser emits. (It also flags the undefined operand of a
.lo/.hi vector shuffle as uninitialised, so templates reduce vector lanes with scalar reads.)"""
import os
import subprocess
import sys

import pytest
from conftest import subprocess_env

ICD = "/usr/lib/oclgrind/liboclgrind-rt-icd.so"
# Oclgrind's reports: invalid (out-of-bounds) accesses, data races, uninitialised values, and
# OpenCL API misuse (except hetcl's probing of optional device queries, which it answers).
PROBLEMS = ("Invalid read", "Invalid write", "data race", "Uninitialized value",
            "uninitialized", "FATAL", "Function: clEnqueue", "Function: clSetKernelArg",
            "Function: clCreate", "Function: clBuild")


@pytest.mark.skipif(not os.path.exists(ICD), reason="oclgrind is not installed "
                    "(apt-get install oclgrind)")
def test_every_kernel_is_clean_under_oclgrind(tmp_path):
    vendors = tmp_path / "vendors"
    vendors.mkdir()
    (vendors / "oclgrind.icd").write_text(ICD + "\n")
    env = subprocess_env(OCLGRIND_CHECK_API="1", OCLGRIND_DATA_RACES="1",
                         OCLGRIND_UNINITIALIZED="1", HETCL_BUILD_OPTIONS="-cl-opt-disable",
                         HETCL_CACHE_DIR=str(tmp_path / "cache"))
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "oclgrind_kernels.py")
    out = subprocess.run([sys.executable, script, str(vendors)], env=env, capture_output=True,
                         text=True, timeout=1200)
    report = out.stdout + out.stderr
    assert out.returncode == 0, report[-4000:]
    assert "all kernels ran under Oclgrind" in out.stdout
    found = [line for line in out.stderr.splitlines() if any(p in line for p in PROBLEMS)]
    assert not found, "\n".join(found[:40])
