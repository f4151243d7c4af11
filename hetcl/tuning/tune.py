"""`hetcl tune`: per device, the fastest parameters for every kernel a model's training step
runs - its GEMMs, the split-K GEMMs' slice counts, each conv's way to its input gradient
(codegen/conv_dx.py), and its im2col/col2im, bias+activation,
activation-gradient, bias-gradient and pooling kernels - stored in the user's tuning DB
(hetcl/tuning/tunedb.py), which training then uses automatically. Each result is written as
soon as it is found, so an interrupted tune keeps what it found.

GEMMs have large spaces: candidates are first timed alone (tuning/tuner.py), then the winner
has to beat the current choice again inside the training step. The other kernels are searched
in the step directly. "In the step": the model is built once with the current choice and once
with the challenger (tunedb.overlay), the two steps run in alternation, and the kernel time of
that DB entry's launches is compared (medians); a challenger is taken only if it is 3% faster.
A kernel that wins launched back to back can lose between the step's other kernels (caches,
and on CPUs the thread pool's state), and a machine whose load drifts during a search slows
both sides of an alternation alike.

Order: the split-K GEMMs' slice counts ("splitk" entries, codegen/splitk.py) come first, then
the GEMMs, then the other kernels. A split's P decides the shapes of the GEMMs and of the
reduction inside it, so choosing it first lets the GEMM search tune the shapes training will
actually run (tuned the other way round, a new P would leave its slices on untuned
defaults); the price is that P is chosen with the inner GEMMs' parameters as they are."""
import contextlib
import random
import statistics

import numpy as np

from ..backend.device import event_seconds
from ..codegen import launch
from ..codegen.gemm import record_problems, tuned_params
from ..codegen.launch import record_launches
from ..errors import BuildError, HetclError
from ..model.models import INPUT_SHAPES, build_model
from ..parallel.runtime import Runtime
from . import tunedb
from .buckets import gemm_bucket
from .tuner import MARGIN, tune_gemm


def model_gemm_problems(model_name, device, batch):
    """The distinct GEMM problems of one training step of the model on the device."""
    model = build_model(model_name, INPUT_SHAPES[model_name], 10, seed=0)
    x = np.zeros((batch,) + INPUT_SHAPES[model_name], np.float32)
    with record_problems() as problems:  # one step builds every kernel, lazy ones included
        Runtime([device]).gradients(model, x, np.zeros(batch, np.int32))
    return list(dict.fromkeys(problems))


def step_executor(model_name, device, batch, key=None, params=None):
    """An executor of the model with every kernel built and a random batch (normal inputs,
    seeded) as input; with key = (kernel, bucket), the kernels of that DB entry use
    `params`. (tools/bench_tuned.py times layers with it too.)"""
    with tunedb.overlay(key[0], key[1], params.as_dict()) if key else contextlib.nullcontext():
        model = build_model(model_name, INPUT_SHAPES[model_name], 10, seed=0)
        model.build(INPUT_SHAPES[model_name])
        ex = Runtime([device]).executor(model, device, batch)
        rng = np.random.default_rng(0)
        ex.set_input(rng.standard_normal((batch,) + INPUT_SHAPES[model_name]),
                     rng.integers(0, 10, batch))
        for _ in ex.enqueue_step(batch):  # lazy kernels are built in the first step
            pass
    return ex


def _step_launches(ex, batch):
    with record_launches() as launches:
        for _ in ex.enqueue_step(batch):
            pass
    ex.replica.device.queue.finish()
    return launches


def _kernel_ms(ex, batch, key):
    """Milliseconds of kernel time of the DB entry `key`'s launches in one training step."""
    ours = [e for owner, e in _step_launches(ex, batch)
            if owner.tune and tuple(owner.tune[:2]) == key]
    if not ours:
        raise HetclError(f"no {key[0]} kernel of bucket {key[1]} runs in this training step")
    return sum(map(event_seconds, ours)) * 1e3


def compare_in_step(model_name, device, batch, key, current, challengers, rounds=12):
    """-> [(challenger, median ms with the current choice, median ms with it)], each
    challenger's step run in alternation with the current choice's."""
    ref = step_executor(model_name, device, batch, key, current)
    out = []
    for params in challengers:
        seen = len(launch.replaced)
        try:
            ex = step_executor(model_name, device, batch, key, params)
        except (BuildError, ValueError):  # not buildable for this shape or device
            continue
        if any(r[2] == params for r in launch.replaced[seen:]):  # proven broken here
            continue
        times = [[], []]
        for _ in range(rounds):
            times[0].append(_kernel_ms(ref, batch, key))
            times[1].append(_kernel_ms(ex, batch, key))
        out.append((params, statistics.median(times[0]), statistics.median(times[1])))
    return out


def step_kernels(model_name, device, batch):
    """{(kernel, bucket): (current params, candidates)} of the non-GEMM kernels that one
    training step of the model launches, in launch order; the split-K GEMMs are found through
    their attributed launches (codegen.launch.attribute)."""
    found = {}
    for owner, _ in _step_launches(step_executor(model_name, device, batch), batch):
        if owner.tune and owner.tune[0] != "gemm" and tuple(owner.tune[:2]) not in found:
            kernel, bucket, candidates = owner.tune
            space = candidates() if candidates else \
                type(owner.params).valid_space(device.features)
            found[(kernel, bucket)] = (owner.params, space)
    return found


def _best(current, results):
    """-> (params, ms, ms before): the fastest challenger if it clears the margin."""
    if results:
        params, before, ms = min(results, key=lambda r: r[2] / r[1])
        if ms <= before * MARGIN:
            return params, ms, before
        return current, results[0][1], results[0][1]
    return current, float("nan"), float("nan")


STAGES = ("splitk", "gemm", "other")  # what a tune can be limited to, in the order it runs


def tune(devices, model_names, batch=256, count=12, report=print, db_path=None, rounds=12,
         kinds=STAGES):
    """-> list of (device, (kernel, bucket), label, best params, ms, ms before) rows.
    rounds: alternations per comparison inside the training step. kinds: a subset of STAGES
    (e.g. only "other" to re-tune the non-GEMM kernels after a change to them)."""
    rows = []
    for device in devices:
        def save(key, label, best, ms, before):
            tunedb.record(device, key[0], key[1], best.as_dict(), ms, before, path=db_path)
            rows.append((device, key, label, best, ms, before))

        done = set()
        for name in model_names if "splitk" in kinds else ():
            _tune_in_step(name, device, batch, count, rounds, report, save, done, splits=True)
        problems, owner = [], {}
        for name in model_names if "gemm" in kinds else ():
            for p in model_gemm_problems(name, device, batch):
                if p not in problems:
                    problems.append(p)
                    owner[p] = name
        for j, problem in enumerate(problems):
            label = fmt(problem)

            def progress(i, total, j=j, label=label):
                report(f"\r{device.name}: GEMM {j + 1}/{len(problems)} {label}: "
                       f"candidate {i + 1}/{total}   ", end=True)
            key = ("gemm", gemm_bucket(*problem))
            current = tuned_params(device, *problem)
            best, ms, before = tune_gemm(device, problem, count, progress=progress)
            if best != current:  # confirmed inside the training step, or not taken
                progress(count, count)
                best, ms, before = _best(current, compare_in_step(
                    owner[problem], device, batch, key, current, [best], rounds))
            save(key, label, best, ms, before)
        for name in model_names if "other" in kinds else ():
            # Again while a pass finds kernels the last one did not run (a "conv_dx" choice
            # that changed brings its own im2col and GEMM into the step).
            while _tune_in_step(name, device, batch, count, rounds, report, save, done,
                                splits=False):
                pass
        report("")
    return rows


def _tune_in_step(name, device, batch, count, rounds, report, save, done, splits):
    """Search the model's non-GEMM entries not in `done` in its training step: the splits
    ("splitk") if `splits`, else all the others; each result goes to save().
    -> how many entries were searched"""
    kernels = {key: entry for key, entry in step_kernels(name, device, batch).items()
               if (key[0] == "splitk") == splits}
    searched = 0
    for j, (key, (current, space)) in enumerate(kernels.items()):
        if key in done:
            continue
        done.add(key)
        searched += 1
        report(f"\r{device.name}: {name} kernel {j + 1}/{len(kernels)} {key[0]} {key[1]}   ",
               end=True)
        rng = random.Random(f"0-{key}")
        others = [p for p in space if p != current]
        sample = rng.sample(others, min(count, len(others)))
        best, ms, before = _best(current, compare_in_step(
            name, device, batch, key, current, sample, rounds))
        if ms == ms:  # (nan: nothing could be timed)
            save(key, f"{key[0]} {key[1]}", best, ms, before)
    return searched


def fmt(problem):
    m, n, k, ta, tb, batch = problem
    return f"{'T' if ta else 'N'}{'T' if tb else 'N'} {m}x{n}x{k}" + (f" x{batch}" if batch > 1 else "")
