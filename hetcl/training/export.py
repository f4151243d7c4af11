"""`hetcl export`: a saved model as ONNX (its inference graph, hetcl/interop/onnx_export.py) or
safetensors (its parameters under PyTorch's names, hetcl/interop/safetensors_io.py)."""
from .. import __version__
from .saved_model import load_saved


def export_saved(directory, fmt, out, which="last"):
    """Write the checkpoint's last (or "best") save to `out` as fmt "onnx" or "safetensors"."""
    saved = load_saved(directory, which)
    if fmt == "onnx":
        from ..interop.onnx_export import export_onnx
        export_onnx(saved.model, out, saved.mean, saved.std, saved.class_names,
                    metadata={"hetcl.model": saved.name, "hetcl.version": __version__,
                              "hetcl.checkpoint_epoch": str(saved.meta.get("epoch"))})
    else:
        from ..interop.safetensors_io import save_safetensors
        save_safetensors(saved.model, out, names="torch")
