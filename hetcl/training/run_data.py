"""The data of a training run: the data set loaded as the run's configuration says (image size,
strictness), its identity for checkpoints, the validation part held out of the training set,
the held-out parts accuracy is measured on, and each epoch's augmentation."""
from ..engine.resident_sets import Augment
from .data import DataError, load_dataset
from .run_config import AUGMENTS, data_identity

# Held out for validation where a data set has neither a test nor a validation split (an image
# folder of class folders only), so that a run can still measure and keep its best state.
DEFAULT_VAL_SPLIT = 0.1


def load(cfg, dataset=None, identify=False, progress=False):
    """-> (the run's Dataset with its validation part, the identity of the data as loaded or
    None). dataset: one given by the caller instead of cfg.data."""
    data = dataset or load_dataset(cfg.data, image_size=cfg.image_size, strict=cfg.strict,
                                   progress=progress)
    identity = data_identity(data) if identify else None
    fraction = cfg.val_split
    if fraction is not None and data.val_x is not None:
        raise DataError(f"{data.name} has a validation split of its own "
                        f"({len(data.val_x)} images): drop --val-split")
    if fraction is None and not len(data.test_y) and data.val_x is None:
        fraction = DEFAULT_VAL_SPLIT
    return (data.with_validation(fraction, cfg.seed) if fraction else data), identity


def held_out(data):
    """{"val": (images, labels), "test": (images, labels)}: the held-out parts that exist."""
    parts = {"val": (data.val_x, data.val_y), "test": (data.test_x, data.test_y)}
    return {k: v for k, v in parts.items() if v[0] is not None and len(v[0])}


def augment(cfg, epoch):
    """The epoch's Augment for the run's --augment, or None."""
    pad, flip = AUGMENTS[cfg.augment]
    return Augment(pad, flip, cfg.seed, epoch) if pad or flip else None
