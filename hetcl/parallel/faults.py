"""Devices that fail during a training step (runtime.Runtime._drop): an injected fault
for tests (HETCL_FAULT=DEVICE:STEP), and recovery - the failed device is removed with a warning
and the step is redone on the others, so no step is lost and none counted twice; with no device
left, or one that ran out of memory, a one-line error says what to do."""
import warnings

from .. import settings
from ..errors import DeviceFault, DeviceWarning, HetclError, NoWorkingVariant

# OpenCL status names of a device that cannot hold a step's buffers.
_OUT_OF_MEMORY = ("MEM_OBJECT_ALLOCATION_FAILURE", "OUT_OF_RESOURCES", "OUT_OF_HOST_MEMORY",
                  "INVALID_BUFFER_SIZE")


def inject(device, step):
    """HETCL_FAULT=DEVICE:STEP makes device DEVICE fail at training step STEP (tests)."""
    fault = settings.step_fault()
    if fault == (str(device.index), str(step)):
        raise DeviceFault(f"injected fault (HETCL_FAULT={':'.join(fault)})")


def check_recoverable(devices, failed, error, n, alive):
    """A one-line HetclError where a failed step cannot go on without the device: it failed
    outside any device's part (failed None) or it was the last one (alive devices)."""
    if failed is not None and alive > 1:
        return
    if any(code in str(error) for code in _OUT_OF_MEMORY):
        where = f"{devices[failed]}" if failed is not None else "a device"
        raise HetclError(f"{where} ran out of memory for a batch of {n} ({error}); "
                         f"use a smaller --batch-size or add devices") from error
    if isinstance(error, NoWorkingVariant):
        raise HetclError(f"{error}; no other device is left to train on") from error
    raise HetclError(f"OpenCL error with no device left to continue on: {error}") from error


def say_removed(device, error):
    warnings.warn(f"{device} failed ({error}); removed, redoing the step on the other "
                  f"devices", DeviceWarning, stacklevel=4)
