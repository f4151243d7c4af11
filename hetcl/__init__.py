"""hetcl: image-classification training with per-device generated OpenCL kernels.

The public names are imported lazily so that ``import hetcl`` stays cheap and does not touch
OpenCL until a device is asked for.
"""
__version__ = "0.1.0"

_LAZY = {
    "Device": "hetcl.backend.device",
    "list_devices": "hetcl.backend.device",
    "select_devices": "hetcl.backend.device",
    "HetclError": "hetcl.errors",
    "Graph": "hetcl.model.graph",
    "Sequential": "hetcl.model.graph",
    "Runtime": "hetcl.parallel.runtime",
    "Augment": "hetcl.engine.resident_sets",
}


def __getattr__(name):
    if name in ("layers", "optim"):
        import importlib
        return importlib.import_module(f"hetcl.{name}")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'hetcl' has no attribute {name!r}")
    import importlib
    return getattr(importlib.import_module(module), name)
