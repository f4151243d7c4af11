"""A model's parameters in a safetensors file, under PyTorch's state_dict names (the file
torch.nn's load_state_dict(strict=True) takes: torch_names.py) or under hetcl's.

Tensors are float32 in PyTorch's layouts; under PyTorch's names each batch norm also gets its
num_batches_tracked as a 0-d int64 (0: hetcl does not count batches). The file's metadata
says which names it holds and the model's layer summary, for people reading it.
"""
import os

import numpy as np

from ..atomic import write_atomically
from ..errors import HetclError
from .torch_names import to_hetcl_names, torch_names, tracked_names

__all__ = ["save_safetensors", "read_safetensors", "load_safetensors", "to_hetcl_names"]
NAMINGS = ("torch", "hetcl")


def _safetensors_numpy():
    try:
        import safetensors.numpy
    except ImportError:
        raise HetclError("safetensors files need the safetensors package: "
                         "pip install safetensors") from None
    return safetensors.numpy


def save_safetensors(model, path, names="torch"):
    """Write the model's parameters and running statistics to `path` (atomically: a reader
    never sees half a file). names: "torch" (PyTorch's state_dict names) or "hetcl"."""
    if names not in NAMINGS:
        raise HetclError(f"unknown naming {names!r}: use one of {', '.join(NAMINGS)}")
    st = _safetensors_numpy()
    params = model.parameters()
    if names == "torch":
        rename = torch_names(model)
        arrays = {rename[k]: v for k, v in params.items()}
        arrays.update({name: np.array(0, np.int64) for name in tracked_names(model)})
    else:
        arrays = params
    arrays = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    metadata = {"hetcl.names": names, "hetcl.summary": model.summary(),
                "hetcl.input_shape": ",".join(str(s) for s in model.input_shape)}
    if names == "torch":
        metadata["format"] = "pt"  # what loaders of PyTorch files (transformers) look for
    data = st.save(arrays, metadata=metadata)
    write_atomically(os.fspath(path), lambda f: f.write(data), durable=True)


def read_safetensors(path):
    """{name: numpy array} of a safetensors file; a missing, damaged or foreign file (or one
    of a dtype numpy lacks, e.g. bfloat16) raises a one-line HetclError."""
    st = _safetensors_numpy()
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise HetclError(f"{path} does not exist or is not a file: give the path of a "
                         f".safetensors file")
    try:
        return dict(st.load_file(path))
    except Exception as e:  # safetensors' own error, or numpy's for a dtype it lacks
        reason = " ".join(str(e).split()) or type(e).__name__
        raise HetclError(f"{path} is not a readable safetensors file ({reason}): save it "
                         f"again with safetensors (float32 tensors)") from None


def load_safetensors(model, path):
    """Load a safetensors file (hetcl's or PyTorch's names) into a built model."""
    model.load_parameters(to_hetcl_names(model, read_safetensors(path), os.fspath(path)))
