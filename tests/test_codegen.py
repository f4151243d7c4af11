"""Rendering, building and caching of generated kernels."""
import hashlib
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from hetcl.codegen import cache
from hetcl.codegen.gemm import gemm
from hetcl.codegen.gemm import GemmParams
from hetcl.codegen.params import KernelParams
from hetcl.codegen.render import kernel_dirs, render
from hetcl.errors import BuildError, TemplateError
from conftest import subprocess_env



class ToyParams(KernelParams):
    template = "toy.cl.mako"

    def as_dict(self):
        return {"WIDTH": 4}


def write_template(tmp_path, body):
    (tmp_path / "toy.cl.mako").write_text(body)
    return [str(tmp_path)]


def test_templates_are_found_and_render():
    assert kernel_dirs() and os.path.isfile(os.path.join(kernel_dirs()[0], "gemm.cl.mako"))
    features = {"local_memory": True}
    src = render("gemm.cl.mako", GemmParams(), trans_a=False, trans_b=True, features=features)
    assert "__kernel" in src and "#define MWG 64" in src


def test_undefined_name_is_a_clear_error(tmp_path):
    dirs = write_template(tmp_path, "__kernel void k(__global float* x) { x[0] = ${WIDTH} * ${SCALE}; }\n")
    with pytest.raises(TemplateError, match=r"toy.cl.mako uses an undefined name.*SCALE"):
        render("toy.cl.mako", ToyParams(), directories=dirs)


def test_missing_template_is_a_clear_error():
    with pytest.raises(TemplateError, match="no kernel template 'nope.cl.mako'"):
        render("nope.cl.mako", None)


def test_build_failure_names_device_template_params_and_log(device, tmp_path):
    dirs = write_template(tmp_path, "__kernel void k(__global float* x) { x[0] = ${WIDTH} + undeclared_thing; }\n")
    with pytest.raises(BuildError) as info:
        cache.build(device, ToyParams(), directories=dirs)
    msg = str(info.value)
    assert "toy.cl.mako" in msg and device.name in msg and "WIDTH" in msg
    assert "undeclared_thing" in info.value.log


SNIPPET = textwrap.dedent("""
    import json, numpy as np
    from hetcl.backend.device import list_devices
    from hetcl.codegen import cache
    from hetcl.codegen.gemm import gemm
    d = list_devices()[0]
    a = np.arange(12, dtype=np.float32).reshape(3, 4); b = np.ones((4, 5), np.float32)
    ok = bool(np.allclose(gemm(d, a, b), a @ b))
    print(json.dumps(dict(cache.stats, ok=ok)))
""")


def run_process(cache_dir):
    # The binary cache alone: unproven builds (prove.py would compile in its child process).
    env = subprocess_env(HETCL_CACHE_DIR=str(cache_dir), HETCL_PROVE="0")
    out = subprocess.run([sys.executable, "-c", SNIPPET], env=env, capture_output=True,
                         text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_second_process_builds_nothing_and_corrupt_files_are_rebuilt(tmp_path):
    first = run_process(tmp_path)
    assert first["ok"] and first["compiled"] == 1 and first["disk_hits"] == 0
    files = list((tmp_path / "programs").glob("*.bin"))
    assert len(files) == 1

    second = run_process(tmp_path)
    assert second["ok"] and second["compiled"] == 0 and second["disk_hits"] == 1

    files[0].write_bytes(files[0].read_bytes()[:100])  # truncated: checksum fails
    third = run_process(tmp_path)
    assert third["ok"] and third["compiled"] == 1 and third["rebuilt_corrupt"] == 1

    junk = b"not a binary" * 10  # well-formed file whose payload the driver refuses
    files[0].write_bytes(cache.MAGIC + hashlib.sha256(junk).digest() + junk)
    fourth = run_process(tmp_path)
    assert fourth["ok"] and fourth["compiled"] == 1 and fourth["rebuilt_corrupt"] == 1
    assert run_process(tmp_path)["compiled"] == 0  # and the rebuilt file is good again


def test_memory_cache_returns_same_program(device):
    p = GemmParams.defaults(device.features)
    first = cache.build(device, p, trans_a=True, trans_b=False)
    before = cache.stats["memory_hits"]
    assert cache.build(device, p, trans_a=True, trans_b=False) is first
    assert cache.stats["memory_hits"] == before + 1
    assert cache.build(device, p, trans_a=False, trans_b=False) is not first


def test_debug_logging_shows_compiles_and_sources(tmp_path):
    env = subprocess_env(HETCL_CACHE_DIR=str(tmp_path), HETCL_DEBUG="2")
    out = subprocess.run([sys.executable, "-c", SNIPPET], env=env, capture_output=True,
                         text=True, check=True)
    assert "hetcl: compiling gemm.cl.mako" in out.stderr
    assert "__kernel" in out.stderr  # level 2 prints the rendered source
    env["HETCL_DEBUG"] = "1"
    out = subprocess.run([sys.executable, "-c", SNIPPET], env=env, capture_output=True,
                         text=True, check=True)
    assert "hetcl: kernel cache hit: gemm.cl.mako" in out.stderr
    assert "__kernel" not in out.stderr


def test_unwritable_cache_dir_only_costs_a_rebuild(tmp_path, monkeypatch, device):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("HETCL_CACHE_DIR", str(blocker))
    monkeypatch.setattr(cache, "_programs", {})
    compiled = cache.stats["compiled"]
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    np.testing.assert_allclose(gemm(device, a, a.T), a @ a.T)
    assert cache.stats["compiled"] == compiled + 1
    assert not any(blocker.parent.glob("**/*.bin"))
