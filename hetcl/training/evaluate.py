"""`hetcl evaluate`: a saved model's accuracy and confusion matrix on the held-out data of its
run (the test split, else the validation part the run held out). Reads only: no lock, nothing
written."""
import dataclasses

from ..parallel.runtime import Runtime
from . import run_data
from .data import check_input_shape
from .metrics import confusion_matrix
from .saved_model import load_saved, run_settings
from . import checkpoint


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
    dataset, _ = run_data.load(run_settings(meta, data))
    saved = load_saved(checkpoint_dir, which, dataset, meta)
    check_input_shape(dataset, saved.model.input_shape)
    parts = run_data.held_out(dataset)
    part = "test" if "test" in parts else "val"
    images, labels = parts[part]
    preds = rt.evaluate_indices(saved.model, images, labels, dataset.mean, dataset.std,
                                batch_size=meta.get("batch_size", 256))
    return Evaluation(float((preds == labels).mean()),
                      confusion_matrix(labels, preds, dataset.classes),
                      list(dataset.class_names), part)
