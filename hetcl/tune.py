"""`hetcl tune`: find, per device, the fastest GEMM parameters for every GEMM a model's
training step runs, and store them in the user's tuning DB (hetcl/codegen/tunedb.py), which
training then uses automatically. Each result is written as soon as it is found, so an
interrupted tune keeps what it found."""
import numpy as np

from .codegen import tunedb
from .codegen.gemm import record_problems
from .codegen.tuner import tune_gemm
from .models import build_model
from .runtime import Runtime

INPUT_SHAPES = {"lenet5": (1, 28, 28), "mlp": (1, 28, 28), "cifar-cnn": (3, 32, 32)}


def model_gemm_problems(model_name, device, batch):
    """The distinct GEMM problems of one training step of the model on the device."""
    model = build_model(model_name, INPUT_SHAPES[model_name], 10, seed=0)
    x = np.zeros((batch,) + INPUT_SHAPES[model_name], np.float32)
    with record_problems() as problems:  # one step builds every kernel, lazy ones included
        Runtime([device]).gradients(model, x, np.zeros(batch, np.int32))
    return list(dict.fromkeys(problems))


def tune(devices, model_names, batch=256, count=12, report=print, db_path=None):
    """-> list of (device, problem, best params, ms, ms before) rows"""
    rows = []
    for device in devices:
        problems = []
        for name in model_names:
            problems += [p for p in model_gemm_problems(name, device, batch) if p not in problems]
        for j, problem in enumerate(problems):
            def progress(i, total, j=j):
                report(f"\r{device.name}: GEMM {j + 1}/{len(problems)} {fmt(problem)}: "
                       f"candidate {i + 1}/{total}   ", end=True)
            best, ms, before = tune_gemm(device, problem, count, progress=progress)
            tunedb.record(device, "gemm", tunedb.gemm_bucket(*problem), best.as_dict(), ms,
                          before, path=db_path)
            rows.append((device, problem, best, ms, before))
        report("")
    return rows


def fmt(problem):
    m, n, k, ta, tb, batch = problem
    return f"{'T' if ta else 'N'}{'T' if tb else 'N'} {m}x{n}x{k}" + (f" x{batch}" if batch > 1 else "")
