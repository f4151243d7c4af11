"""Devices that fail during a training step (a mixin of runtime.Runtime): an injected fault
for tests (HETCL_FAULT=DEVICE:STEP), and recovery - the failed device is removed with a warning
and the step is redone on the others, so no step is lost and none counted twice; with no device
left, or one that ran out of memory, a one-line error says what to do."""
import os
import warnings

from .errors import DeviceFault, DeviceWarning, HetclError, NoWorkingVariant

# OpenCL status names of a device that cannot hold a step's buffers.
_OUT_OF_MEMORY = ("MEM_OBJECT_ALLOCATION_FAILURE", "OUT_OF_RESOURCES", "OUT_OF_HOST_MEMORY",
                  "INVALID_BUFFER_SIZE")


class FaultRecovery:
    def _maybe_fault(self, device):
        """HETCL_FAULT=DEVICE:STEP makes device DEVICE fail at training step STEP (tests)."""
        spec = os.environ.get("HETCL_FAULT", "")
        if ":" in spec:
            dev, step = spec.split(":", 1)
            if dev.strip() == str(device.index) and step.strip() == str(self.steps + 1):
                raise DeviceFault(f"injected fault (HETCL_FAULT={spec})")

    def _recover(self, model, n, feed, failed, error):
        if failed is None or len(self.devices) - len(self.failed) <= 1:
            if any(code in str(error) for code in _OUT_OF_MEMORY):
                where = f"{self.devices[failed]}" if failed is not None else "a device"
                raise HetclError(f"{where} ran out of memory for a batch of {n} ({error}); "
                                 f"use a smaller --batch-size or add devices") from error
            if isinstance(error, NoWorkingVariant):
                raise HetclError(f"{error}; no other device is left to train on") from error
            raise HetclError(f"OpenCL error with no device left to continue on: {error}") \
                from error
        device = self.devices[failed]
        self.failed.add(failed)
        self.scheduler.remove(failed, str(error))
        warnings.warn(f"{device} failed ({error}); removed, redoing the step on the other "
                      f"devices", DeviceWarning, stacklevel=3)
        for i, d in enumerate(self.devices):  # let the others finish what they had queued
            if i not in self.failed:
                d.queue.finish()
        return self._step(model, n, feed)
