"""`hetcl tune`: find, per device, the fastest GEMM parameters for every GEMM a model's
training step runs, and store them in the user's tuning DB (hetcl/codegen/tunedb.py), which
training then uses automatically. Each result is written as soon as it is found, so an
interrupted tune keeps what it found.

The search times each candidate alone (codegen/tuner.py); a winner then has to beat the current
choice again inside the model's training step - both built into a step, run in alternation,
their GEMMs' kernel time compared - because a kernel that wins launched back to back can lose
between the step's other kernels (caches, and on CPUs the thread pool's state)."""
import statistics

import numpy as np

from .codegen import tunedb
from .codegen.gemm import record_launches, record_problems, tuned_params
from .codegen.tuner import tune_gemm
from .errors import HetclError
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


def _step_executor(model_name, device, batch, bucket, params):
    """An executor of the model whose GEMMs in `bucket` use `params`, its kernels all built."""
    with tunedb.overlay("gemm", bucket, params.as_dict()):
        model = build_model(model_name, INPUT_SHAPES[model_name], 10, seed=0)
        model.build(INPUT_SHAPES[model_name])
        ex = Runtime([device]).executor(model, device, batch)
        ex.set_input(np.zeros((batch,) + INPUT_SHAPES[model_name], np.float32),
                     np.zeros(batch, np.int32))
        for _ in ex.enqueue_step(batch):  # lazy kernels are built in the first step
            pass
    return ex


def confirm_in_step(model_name, device, batch, problem, current, challenger, rounds=12):
    """Median milliseconds per training step of the GEMMs of `problem`'s bucket with the
    current parameters and with the challenger, the two steps run in alternation."""
    bucket = tunedb.gemm_bucket(*problem)
    exes = [_step_executor(model_name, device, batch, bucket, p) for p in (current, challenger)]
    times = [[], []]
    for _ in range(rounds):
        for ex, out in zip(exes, times):
            with record_launches() as launches:
                for _ in ex.enqueue_step(batch):
                    pass
            device.queue.finish()
            ours = [e for p, e in launches if tunedb.gemm_bucket(*p) == bucket]
            if not ours:
                raise HetclError(f"the {fmt(problem)} GEMM does not run in a {model_name} step")
            out.append(sum((e.profile.end - e.profile.start) * 1e-6 for e in ours))
    return statistics.median(times[0]), statistics.median(times[1])


def tune(devices, model_names, batch=256, count=12, report=print, db_path=None):
    """-> list of (device, problem, best params, ms, ms before) rows"""
    rows = []
    for device in devices:
        problems, owner = [], {}
        for name in model_names:
            for p in model_gemm_problems(name, device, batch):
                if p not in problems:
                    problems.append(p)
                    owner[p] = name
        for j, problem in enumerate(problems):
            def progress(i, total, j=j):
                report(f"\r{device.name}: GEMM {j + 1}/{len(problems)} {fmt(problem)}: "
                       f"candidate {i + 1}/{total}   ", end=True)
            current = tuned_params(device, *problem)
            best, ms, before = tune_gemm(device, problem, count, progress=progress)
            if best != current:  # confirmed inside the training step, or not taken
                report(f"\r{device.name}: GEMM {j + 1}/{len(problems)} {fmt(problem)}: "
                       f"checking the winner in a training step   ", end=True)
                before, ms = confirm_in_step(owner[problem], device, batch, problem, current,
                                             best)
                if ms > before * 0.97:
                    best, ms = current, before
            tunedb.record(device, "gemm", tunedb.gemm_bucket(*problem), best.as_dict(), ms,
                          before, path=db_path)
            rows.append((device, problem, best, ms, before))
        report("")
    return rows


def fmt(problem):
    m, n, k, ta, tb, batch = problem
    return f"{'T' if ta else 'N'}{'T' if tb else 'N'} {m}x{n}x{k}" + (f" x{batch}" if batch > 1 else "")
