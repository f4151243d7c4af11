"""The caches are never fatal: a malformed tuning DB gives the defaults and one warning per file;
an unwritable kernel cache dir gives working kernels, built in memory, and one warning per
process."""
import json
import os
import warnings

import numpy as np
import pytest

from hetcl.codegen import cache, verdicts
from hetcl.tuning import tunedb
from hetcl.tuning.buckets import gemm_bucket
from hetcl.codegen.gemm import gemm, tuned_params
from hetcl.codegen.gemm import GemmParams

SHAPE = (8, 8, 8, False, False, 1)
BUCKET = gemm_bucket(*SHAPE)


def default(device):
    return GemmParams.for_shape(device.features, *SHAPE[:3])


def odd_params(device):
    """A valid point of the space that the default for SHAPE is not."""
    return next(p for p in GemmParams.valid_space(device.features) if p != default(device))


def db(device, kernels):
    """A DB with one entry, this device's, holding `kernels`."""
    return {"format": 1, "devices": {device.fingerprint: {
        "name": device.name, "vendor": device.profile["vendor"], "kind": device.kind,
        "driver": "0", "kernels": kernels}}}


def with_params(params):
    return lambda device: db(device, {"gemm": {BUCKET: {"params": params, "ms": 1,
                                                        "default_ms": 2}}})


def with_good_params(**changes):
    return lambda device: with_params(dict(odd_params(device).as_dict(), **changes))(device)


def with_device_entry(entry):
    return lambda device: {"format": 1, "devices": {device.fingerprint: entry}}


# name -> the DB file's content: bytes, or a function of the device giving what is dumped as JSON
MALFORMED = {
    "not json": b"{ not json",
    "not utf-8": b"\xff\xfe\x00garbage",
    "absurdly deep": b"[" * 200000,
    "top level a list": b"[1, 2]",
    "top level null": b"null",
    "another format": b'{"format": 2, "devices": {}}',
    "devices a list": b'{"format": 1, "devices": []}',
    "device entry a string": with_device_entry("a string"),
    "device entry without kernels": with_device_entry({"name": "x", "vendor": "y"}),
    "kernels a list": with_device_entry({"name": "x", "kernels": ["gemm"]}),
    "buckets a list": lambda device: db(device, {"gemm": [BUCKET]}),
    "bucket entry a number": lambda device: db(device, {"gemm": {BUCKET: 3}}),
    "bucket entry without params": lambda device: db(device, {"gemm": {BUCKET: {"ms": 1}}}),
    "params a list": with_params([64, 64, 16]),
    "params null": with_params(None),
    "params an unknown key": with_good_params(BOGUS=1),
    "params a string value": with_good_params(MWG="64"),
    "params a float value": with_good_params(MWG=64.0),
    "params a bool value": with_good_params(USE_LOCAL=True),
    "params a null value": with_good_params(KWG=None),
    "params the class rejects": with_good_params(VWN=3),
    "params all zero": with_good_params(MWG=0, NWG=0, KWG=0, MDIMC=0, NDIMC=0),
}


def write_db(path, content, device):
    path.write_bytes(content if isinstance(content, bytes) else
                     json.dumps(content(device)).encode())


def tuning_warnings(record):
    return [str(w.message) for w in record if "tuning DB" in str(w.message)]


@pytest.mark.parametrize("name", list(MALFORMED))
def test_a_malformed_db_gives_the_defaults_and_one_warning(device, fresh_db, name):
    path = fresh_db / "tuning.json"
    write_db(path, MALFORMED[name], device)
    with pytest.warns(UserWarning) as record:
        chosen = tuned_params(device, *SHAPE)
    assert chosen == default(device)
    assert len(record) == 1, [str(w.message) for w in record]
    assert str(path) in str(record[0].message)
    assert tunedb.database().lookup(device, "gemm", BUCKET) is None


def test_a_malformed_entry_names_the_file_entry_and_fix(device, fresh_db):
    path = fresh_db / "tuning.json"
    write_db(path, with_good_params(VWN=3), device)
    with pytest.warns(UserWarning) as record:
        tuned_params(device, *SHAPE)
    message = str(record[0].message)
    assert f"tuning DB {path}: entry 'gemm {BUCKET}' for device" in message
    assert "is malformed (VWN=3 is not an OpenCL vector width" in message
    assert message.endswith("ignored - `hetcl tune` rewrites it")


def test_a_sibling_device_s_malformed_entry_is_not_fatal_either(device, fresh_db):
    """The other devices of the vendor and kind are searched too (a borrowed entry)."""
    data = {"format": 1, "devices": {"a-sibling": {
        "name": "a sibling", "vendor": device.profile["vendor"], "kind": device.kind,
        "kernels": {"gemm": "not buckets"}}}}
    (fresh_db / "tuning.json").write_text(json.dumps(data))
    with pytest.warns(UserWarning, match="kernel 'gemm' of device 'a sibling'") as record:
        assert tuned_params(device, *SHAPE) == default(device)
    assert len(record) == 1


def test_good_entries_beside_malformed_ones_are_used_with_one_warning(device, fresh_db):
    good = odd_params(device)
    data = db(device, {"gemm": {BUCKET: {"params": good.as_dict()},
                                "NN-16x16x16": {"params": {"VWN": 3}},
                                "NN-32x32x32": {"params": "x"}},
                       "im2col": {"some bucket": {"params": {"WG": -1}}}})
    (fresh_db / "tuning.json").write_text(json.dumps(data))
    with pytest.warns(UserWarning) as record:
        assert tuned_params(device, *SHAPE) == good
    assert len(tuning_warnings(record)) == 1
    assert "(and 2 more)" in tuning_warnings(record)[0]


def test_a_malformed_shipped_db_asks_for_a_reinstall(device, fresh_db):
    write_db(fresh_db / "shipped.json", with_params([1]), device)
    with pytest.warns(UserWarning, match="shipped.json.*reinstall hetcl") as record:
        assert tuned_params(device, *SHAPE) == default(device)
    assert len(record) == 1


def test_recording_a_result_rewrites_the_malformed_entries_away(device, fresh_db):
    path = fresh_db / "tuning.json"
    write_db(path, with_good_params(BOGUS=1), device)
    good = odd_params(device)
    with pytest.warns(UserWarning, match="unknown parameter BOGUS"):
        tunedb.record(device, "gemm", "NN-64x64x64", good.as_dict(), 0.1, 0.2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tunedb._db = None
        assert tuned_params(device, *SHAPE) == default(device)
        assert tuned_params(device, 60, 50, 40, False, False, 1) == good
    assert BUCKET not in json.loads(path.read_text())["devices"][device.fingerprint][
        "kernels"]["gemm"]


def test_a_params_dict_missing_a_tunable_is_not_malformed(device, fresh_db):
    """Entries written before a tunable existed: the class's default fills it in."""
    good = odd_params(device).as_dict()
    del good["DBUF"]
    write_db(fresh_db / "tuning.json", with_params(good), device)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        tunedb.database()


def test_the_shipped_db_is_well_formed_and_every_kernel_in_it_has_a_params_class():
    with open(tunedb.SHIPPED) as f:
        raw = json.load(f)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        clean = tunedb.read(tunedb.SHIPPED)
    assert clean == raw
    kernels = {k for entry in raw["devices"].values() for k in entry["kernels"]}
    assert all(tunedb.params_class(k) is not None for k in kernels), kernels


# --- the kernel cache ---------------------------------------------------------------------------

def _chmod_dir(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes into a read-only dir")
    path = tmp_path / "cache"
    path.mkdir()
    path.chmod(0o500)
    return path


def _under_a_file(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    return blocker / "cache"  # mkdir fails with NotADirectoryError, for root too


@pytest.fixture(params=[_chmod_dir, _under_a_file], ids=["read-only-dir", "under-a-file"])
def unwritable(request, tmp_path, monkeypatch):
    """An unwritable HETCL_CACHE_DIR, this process's programs and warnings forgotten, builds
    unproven (the prover's child would write the cache too)."""
    path = request.param(tmp_path)
    monkeypatch.setenv("HETCL_CACHE_DIR", str(path))
    monkeypatch.setenv("HETCL_PROVE", "0")
    monkeypatch.setattr(cache, "_programs", {})
    monkeypatch.setattr(cache, "_unwritable", set())
    monkeypatch.setattr(tunedb, "_db", None)
    yield path
    if path.is_dir():
        path.chmod(0o700)  # so that pytest can remove it


def cache_warnings(record):
    return [str(w.message) for w in record if "cannot be written" in str(w.message)]


def test_an_unwritable_cache_builds_in_memory_with_one_warning(device, unwritable):
    rng = np.random.default_rng(0)
    a = rng.standard_normal((5, 7)).astype(np.float32)
    b = rng.standard_normal((7, 3)).astype(np.float32)
    compiled = cache.stats["compiled"]
    with pytest.warns(UserWarning) as record:
        np.testing.assert_allclose(gemm(device, a, b), a @ b, rtol=1e-4, atol=1e-4)
        np.testing.assert_allclose(gemm(device, a.T, b, trans_a=True), a @ b, rtol=1e-4,
                                   atol=1e-4)
        np.testing.assert_allclose(gemm(device, a, b.T, trans_b=True), a @ b, rtol=1e-4,
                                   atol=1e-4)
        # the other writers of the cache dir: proving's verdicts, the tuning DB
        verdicts.record(device, "some-program-key", {"ok": True, "reason": "", "template": "t",
                                                     "params": "p"})
        tunedb.record(device, "gemm", BUCKET, default(device).as_dict(), 1.0, 1.0)
    assert cache.stats["compiled"] == compiled + 3  # three programs, each built
    messages = cache_warnings(record)
    assert len(messages) == 1, messages
    assert len(record) == 1, [str(w.message) for w in record]
    assert str(unwritable) in messages[0] and "set HETCL_CACHE_DIR to a writable" in messages[0]
    assert ("EACCES" in messages[0]) if unwritable.exists() else ("ENOTDIR" in messages[0])
    assert not unwritable.exists() or not any(unwritable.iterdir())


def test_a_failed_write_leaves_no_temporary_file(tmp_path, monkeypatch):
    """A full disk (ENOSPC) shows when the file is written or renamed: after the temporary file
    exists."""
    monkeypatch.setenv("HETCL_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cache, "_unwritable", set())

    def full(*args):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", full)
    with pytest.warns(UserWarning, match=r"ENOSPC: No space left on device") as record:
        assert not cache.write_json(str(tmp_path / "verdicts" / "x.json"), {"a": 1})
        cache._write_binary(str(tmp_path / "programs" / "k.bin"), b"payload")
    assert len(record) == 1
    assert [p for p in tmp_path.rglob("*") if p.is_file()] == []


def test_a_path_outside_the_cache_dir_is_named_itself(tmp_path, monkeypatch):
    """tunedb.record(path=...) may write anywhere: the warning names that file, not the cache."""
    monkeypatch.setattr(cache, "_unwritable", set())
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    target = blocker / "tuning.json"
    with pytest.warns(UserWarning, match="cannot write .*a-file/tuning.json") as record:
        assert not cache.write_json(str(target), {})
    assert "HETCL_CACHE_DIR" not in str(record[0].message)
