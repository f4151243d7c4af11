"""`hetcl devices --check`: can this device run hetcl? The first command on a new machine.

For each device, one training step, an update and a forward pass of every shipped model (on a
small random batch, with the data set's uint8 images gathered on the device) build every kernel
those models use. Each new variant is proven on the way (codegen/prove.py: built and first run
in a child process, checked against numpy where its family has a probe), so a compiler that
crashes or computes wrong is found here, not in the middle of a run. The verdict per device:
  ok        every kernel's chosen variant works;
  replaced  some variants did not work and others took their place (listed, with the reason);
  unusable  a kernel has no working variant (the reason): training leaves this device out.
"""
import time

import numpy as np

from ..codegen import launch, prove
from ..errors import HetclError, NoWorkingVariant
from ..model.models import INPUT_SHAPES, build_model
from ..model.optim import SGD
from ..parallel.runtime import Runtime

CHECK_MODELS = ("lenet5", "mlp", "cifar-cnn", "resnet20")
BATCH = 8


def _exercise(device, name):
    """Build and run every kernel of one model on `device`: gather, step, update, forward.
    -> the loss of the step (finite where the kernels compute right)."""
    shape = INPUT_SHAPES[name]
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2 * BATCH,) + shape, dtype=np.uint8)
    labels = rng.integers(0, 10, 2 * BATCH, dtype=np.uint8)
    model = build_model(name, shape, 10, seed=0)
    rt = Runtime([device])
    loss = rt.train_step_indices(model, SGD(lr=0.01, momentum=0.9), images, labels,
                                 np.arange(BATCH), mean=0.5, std=0.25)
    logits = rt.forward(model, (images[:BATCH] / 255.0 - 0.5) / 0.25)
    if not (np.isfinite(loss) and np.isfinite(logits).all()):
        raise HetclError(f"{name} gave a non-finite loss or output ({loss})")
    return loss


def check_device(device, models=None):
    """-> {"index", "name", "platform", "verdict", "reason", "replaced": [..], "proved",
    "seconds"}; never raises for a device fault (that is the verdict)."""
    first, proved = len(launch.replaced), prove.stats["proved"]
    started = time.perf_counter()
    verdict, reason = "ok", ""
    try:
        for name in models or CHECK_MODELS:
            _exercise(device, name)
    except NoWorkingVariant as e:
        verdict, reason = "unusable", str(e)
    except HetclError as e:
        cause = e.__cause__ if isinstance(e.__cause__, NoWorkingVariant) else e
        verdict, reason = "unusable", str(cause)
    replaced = [{"template": t, "broken": str(b), "used": str(u), "reason": r}
                for d, t, b, u, r in launch.replaced[first:] if d is device]
    replaced = [r for i, r in enumerate(replaced) if r not in replaced[:i]]
    if verdict == "ok" and replaced:
        verdict = "replaced"
    return {"index": device.index, "name": device.name, "platform": device.profile["platform"],
            "verdict": verdict, "reason": reason, "replaced": replaced,
            "proved": prove.stats["proved"] - proved,
            "seconds": round(time.perf_counter() - started, 2)}


def describe(result):
    """The verdict as lines for the terminal."""
    head = f"{result['index']}: {result['name']} ({result['platform']}): {result['verdict']}"
    if result["reason"]:
        head += f" - {result['reason']}"
    lines = [head + f"  [{result['proved']} variants proven, {result['seconds']:.1f} s]"]
    lines += [f"   {r['template']}: {r['broken']} -> {r['used']} ({r['reason']})"
              for r in result["replaced"]]
    return lines
