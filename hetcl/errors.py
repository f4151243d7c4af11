"""Errors a user can act on. Each message is one line that says what was wrong and what to do;
the CLI prints it without a traceback and exits with status 1."""


class HetclError(Exception):
    """Base class: a mistake or a missing piece the user can fix."""


class NoPlatformError(HetclError):
    pass


class DeviceSelectionError(HetclError):
    pass


class TemplateError(HetclError):
    """A kernel template failed to render (e.g. an undefined name under strict_undefined)."""


class BuildError(HetclError):
    """The OpenCL compiler rejected a generated kernel. Carries the full build log."""

    def __init__(self, device, template, params, log):
        self.device, self.template, self.params, self.log = device, template, params, log
        super().__init__(
            f"OpenCL build of {template} failed on {device} with params {params}; "
            f"compiler log:\n{log.strip()}")


class ShapeError(HetclError):
    """A layer got an input of a shape it cannot take (names the layer and both shapes)."""


class InputError(HetclError, ValueError):
    """The Python API got a value or dtype it cannot take (a label outside the model's classes,
    an index outside the data set, float images where uint8 are needed); checked on the host
    before any kernel runs (inputs.py). Also a ValueError, which callers may already catch."""


class DeviceFault(HetclError):
    """A device failed during a step (an OpenCL error, or one injected with HETCL_FAULT)."""


class DeviceWarning(UserWarning):
    """A device was removed from a run (it failed); training goes on without it."""


class VariantWarning(UserWarning):
    """A kernel variant does not work on a device; another variant takes its place."""


class VariantBroken(BuildError):
    """A kernel variant is proven not to work on a device and driver: its build crashed, hung
    or failed, or it computed wrong numbers (hetcl/codegen/prove.py). Launchers then try the
    next variant."""

    def __init__(self, device, template, params, reason):
        self.device, self.template, self.params, self.log = device, template, params, reason
        self.reason = reason
        HetclError.__init__(self, f"{template} {params} does not work on {device}: {reason}")


class NoWorkingVariant(DeviceFault):
    """No variant of a kernel works on a device: the device cannot run hetcl's models."""


class ProbeFailed(Exception):
    """A kernel variant's probe found it wrong in a way that is not a number (e.g. the compiler
    warned on a kernel that must build cleanly); the message says what (codegen/prover.py)."""
