"""A trained model as a checkpoint holds it, for the commands that use one without training
(`hetcl evaluate`, `predict`, `export`): the model built and loaded, its class names and the
normalisation its inputs had. Reads only: no lock, nothing written."""
import dataclasses

from ..errors import HetclError
from ..model.models import build_model
from . import checkpoint, run_config, run_data


@dataclasses.dataclass
class SavedModel:
    model: object         # the built Graph, its parameters loaded
    name: str             # its name in hetcl.model.models
    meta: dict            # the checkpoint's meta.json
    input_shape: tuple    # (C, H, W) of the images it takes
    class_names: list
    mean: float           # the normalisation x = (v/255 - mean)/std of its training data
    std: float
    image_size: int = None  # the run's --image-size (image folders resized to it), or None


def run_settings(meta, data=None):
    """The TrainConfig a saved run's data is loaded with (its image size, validation split and
    seed; `data` in place of its data path)."""
    saved = meta.get("config") or {}
    cfg = run_config.TrainConfig(**{k: saved[k] for k in ("image_size", "val_split", "seed")
                                    if saved.get(k) is not None})
    cfg.data = data or saved.get("data")
    return cfg


def load_saved(directory, which="last", dataset=None, meta=None):
    """-> SavedModel of a checkpoint's last (or "best") save. Checkpoints that predate saved
    class names and normalisation take them from the run's data (`dataset`, else loaded).
    meta: the checkpoint's meta.json where the caller has read it already."""
    meta = meta if meta is not None else checkpoint.read_meta(directory)
    name, shape = meta.get("model"), tuple(meta.get("input_shape") or ())
    names, norm = meta.get("class_names"), meta.get("normalisation")
    if names is None or norm is None:
        if dataset is None:
            dataset, _ = run_data.load(run_settings(meta))
        names, norm = list(dataset.class_names), {"mean": dataset.mean, "std": dataset.std}
    if not shape:
        raise HetclError(f"checkpoint {directory} does not say its model's input shape; "
                         f"evaluate it with --data")
    model = build_model(name, shape, len(names), meta.get("seed", 0))
    params, _, _ = checkpoint.load(directory, which)
    checkpoint.check_arrays(params, {}, {k: v.shape for k, v in model.parameters().items()},
                            directory)
    model.load_parameters(params)
    size = (meta.get("config") or {}).get("image_size")
    return SavedModel(model, name, meta, shape, list(names), float(norm["mean"]),
                      float(norm["std"]), size)
