"""`hetcl evaluate`: a saved model's accuracy and confusion matrix on the held-out data of its
run (the test split, else the validation part the run held out). Reads only: no lock, nothing
written."""
import dataclasses

from ..model.models import build_model
from ..parallel.runtime import Runtime
from . import checkpoint, run_config, run_data
from .data import check_input_shape
from .metrics import confusion_matrix


@dataclasses.dataclass
class Evaluation:
    accuracy: float
    matrix: object       # int64 [classes, classes]: rows true class, columns predicted
    class_names: list
    part: str            # "test" or "val": what was measured

    def __iter__(self):  # acc, matrix = evaluate(...)
        return iter((self.accuracy, self.matrix))


def evaluate(checkpoint_dir, data=None, devices="all", which="last"):
    """-> Evaluation of a saved model (its last save, or "best") on `data` (default: the data
    it was trained on, held out as the run held it out)."""
    meta = checkpoint.read_meta(checkpoint_dir)
    rt = Runtime(devices)  # (a device typo fails before data loads)
    saved = meta.get("config") or {}
    cfg = run_config.TrainConfig(**{k: saved[k] for k in ("image_size", "val_split", "seed")
                                    if saved.get(k) is not None})
    cfg.data = data or saved.get("data")
    dataset, _ = run_data.load(cfg)
    model = build_model(meta.get("model"), dataset.sample_shape, dataset.classes,
                        meta.get("seed", 0))
    check_input_shape(dataset, model.input_shape)
    params, _, _ = checkpoint.load(checkpoint_dir, which)
    shapes = {k: v.shape for k, v in model.parameters().items()}
    checkpoint.check_arrays(params, {}, shapes, checkpoint_dir)
    model.load_parameters(params)
    parts = run_data.held_out(dataset)
    part = "test" if "test" in parts else "val"
    images, labels = parts[part]
    preds = rt.evaluate_indices(model, images, labels, dataset.mean, dataset.std,
                                batch_size=meta.get("batch_size", 256))
    return Evaluation(float((preds == labels).mean()),
                      confusion_matrix(labels, preds, dataset.classes),
                      list(dataset.class_names), part)
