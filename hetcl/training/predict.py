"""`hetcl predict`: the top classes of image files (or the images of IDX/CIFAR files) by a saved
model, with their names and probabilities."""
import numpy as np

from ..model.inputs import normalised
from ..parallel.runtime import Runtime
from .predict_inputs import read_inputs
from .saved_model import load_saved


def classify(checkpoint_dir, paths, devices="all", which="last", top_k=3, batch_size=256):
    """-> [{"file": name, "top": [{"class": name, "index": i, "probability": p}, ...]}] in
    the order of the inputs, the top_k most probable classes first."""
    rt = Runtime(devices)  # (a device typo fails before anything loads)
    saved = load_saved(checkpoint_dir, which)
    pixels, names = read_inputs(paths, saved.input_shape, saved.image_size)
    probs = rt.predict(saved.model, normalised(pixels, saved.mean, saved.std), batch_size)
    k = max(1, min(int(top_k), probs.shape[1]))
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    return [{"file": name, "top": [{"class": saved.class_names[j], "index": int(j),
                                    "probability": float(p[j])} for j in row]}
            for name, p, row in zip(names, probs, order)]
