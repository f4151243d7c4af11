"""Device discovery, kinds, feature flags and the device-selection parser."""
import types

import pytest

from hetcl.backend.device import list_devices, parse_selection, select_devices
from hetcl.backend.device_profile import features, fingerprint
from hetcl.errors import DeviceSelectionError


def fake(index, kind, platform_index=0, device_index=None, name=None):
    profile = {"index": index, "platform_index": platform_index,
               "device_index": index if device_index is None else device_index,
               "kind": kind, "name": name or f"{kind}{index}"}
    return types.SimpleNamespace(profile=profile)


# A machine with a CPU (platform 0), an integrated GPU (platform 1) and two discrete GPUs
# (platform 2).
MACHINE = [fake(0, "cpu", 0, 0), fake(1, "igpu", 1, 0), fake(2, "dgpu", 2, 0), fake(3, "dgpu", 2, 1)]


def names(devs):
    return [d.profile["name"] for d in devs]


@pytest.mark.parametrize("spec,expected", [
    ("all", ["cpu0", "igpu1", "dgpu2", "dgpu3"]),
    ("cpu", ["cpu0"]),
    ("gpu", ["igpu1", "dgpu2", "dgpu3"]),
    ("igpu", ["igpu1"]),
    ("dgpu", ["dgpu2", "dgpu3"]),
    ("0,2", ["cpu0", "dgpu2"]),
    ("3,0", ["dgpu3", "cpu0"]),
    ("2:1", ["dgpu3"]),
    ("1:0,0", ["igpu1", "cpu0"]),
    ("dgpu,2", ["dgpu2", "dgpu3"]),
    (" CPU , 3 ", ["cpu0", "dgpu3"]),
    (2, ["dgpu2"]),
])
def test_selection(spec, expected):
    assert names(parse_selection(spec, MACHINE)) == expected


@pytest.mark.parametrize("spec,message", [
    ("7", "no device matches '7'"),
    ("3:0", "no device matches '3:0'"),
    ("accelerator", "no device matches 'accelerator'"),
    ("fast", "unknown device selector 'fast'"),
    ("", "empty device selection"),
    ("0,,x", "unknown device selector 'x'"),
])
def test_selection_errors_list_the_devices(spec, message):
    with pytest.raises(DeviceSelectionError) as info:
        parse_selection(spec, MACHINE)
    msg = str(info.value)
    assert message in msg
    assert "0 = 0:0 cpu0 (cpu); 1 = 1:0 igpu1 (igpu); 2 = 2:0 dgpu2 (dgpu)" in msg
    assert "\n" not in msg


def profile(**over):
    base = {"kind": "dgpu", "local_mem_dedicated": True, "host_unified_memory": False,
            "fp64": True, "max_work_group_size": 1024, "local_mem_bytes": 49152,
            "platform": "P", "name": "N", "vendor": "V", "driver_version": "1.0",
            "device_version": "OpenCL 3.0", "compute_units": 132}
    base.update(over)
    return base


def test_features_come_from_the_profile_only():
    gpu = features(profile())
    assert gpu["local_memory"] and gpu["simt"] and not gpu["unified_memory"]
    cpu = features(profile(kind="cpu", local_mem_dedicated=False, host_unified_memory=True))
    assert not cpu["local_memory"] and not cpu["simt"] and cpu["unified_memory"]
    assert features(profile(kind="igpu"))["unified_memory"]


def test_fingerprint_changes_with_the_driver():
    assert fingerprint(profile()) == fingerprint(profile())
    assert fingerprint(profile()) != fingerprint(profile(driver_version="1.1"))


def test_real_devices_are_listed_consistently():
    devs = list_devices()
    assert [d.index for d in devs] == list(range(len(devs)))
    for d in devs:
        assert d.kind in ("cpu", "igpu", "dgpu", "accelerator")
        assert d.profile["compute_units"] >= 1 and d.profile["global_mem_bytes"] > 0
        assert d.queue.device == d.cl_device
    assert select_devices("all") == devs
    assert select_devices(devs[-1]) == [devs[-1]]
    assert select_devices([devs[0]]) == [devs[0]]


def test_retired_transfer_events_are_kept_until_complete(device):
    """Device.retire holds the events of non-blocking host transfers (dropping pyopencl's
    NannyEvent would wait for its transfer) and lets completed ones go once it holds many; the
    uploads themselves arrive intact."""
    import numpy as np
    from hetcl.backend.buffers import empty
    from hetcl.backend.device import Device
    dev = Device(device.cl_device, dict(device.profile))  # its own (empty) list
    arrays = [empty(dev, (16,)) for _ in range(70)]
    first = [a.set(np.full(16, i, np.float32), wait=False) for i, a in enumerate(arrays[:10])]
    dev.retire(*first, None)
    assert dev._retired == first  # held (None ignored), nothing let go below the threshold
    dev.queue.finish()
    dev.retire(*[a.set(np.full(16, i + 10, np.float32), wait=False)
                 for i, a in enumerate(arrays[10:])])
    assert len(dev._retired) <= 60 and not any(e in dev._retired for e in first)
    assert all(a.get()[0] == i for i, a in enumerate(arrays))
