"""Timed search over a kernel's parameter space on one device (GEMM for now: it is where the
time goes). Candidates: the current choice (DB or default), the defaults, and a seeded sample
of the valid space; each is built, run once to warm up, then timed by OpenCL profiling events
(median of `reps`). The current choice is always among the candidates and a candidate replaces
it only when measurably faster, so tuning never makes a shape slower than before."""
import random
import statistics

import numpy as np

from ..buffers import empty, to_device
from ..errors import BuildError
from .gemm import Gemm, tuned_params
from .params import GemmParams


def _median_ms(run, reps):
    run().wait()
    times = []
    for _ in range(reps):
        event = run()
        event.wait()
        times.append((event.profile.end - event.profile.start) * 1e-6)
    return statistics.median(times)


def time_gemm(device, problem, params, buffers, reps=5):
    """Milliseconds of one GEMM launch with `params`, or None if they cannot run here."""
    m, n, k, ta, tb, batch = problem
    if not params.valid(device.features):
        return None
    try:
        op = Gemm(device, m, n, k, ta, tb, batch=batch, params=params)
    except (BuildError, ValueError):
        return None
    a, b, c = buffers
    strides = dict(a_stride=m * k, b_stride=k * n, c_stride=m * n) if batch > 1 else {}
    return _median_ms(lambda: op(a, b, c, **strides), reps)


def gemm_candidates(device, problem, count, seed=0):
    m, n, k, ta, tb, batch = problem
    current = tuned_params(device, m, n, k, ta, tb, batch)
    first = [current, GemmParams.for_shape(device.features, m, n, k),
             GemmParams.defaults(device.features)]
    space = GemmParams.valid_space(device.features)
    rng = random.Random(f"{seed}-{problem}")
    sample = rng.sample(space, min(count, len(space)))
    out = []
    for p in first + sample:
        if p not in out:
            out.append(p)
    return current, out


def tune_gemm(device, problem, count=12, reps=5, progress=None):
    """-> (best params, best ms, ms of the choice before tuning)"""
    m, n, k, ta, tb, batch = problem
    rng = np.random.default_rng(0)
    buffers = (to_device(device, rng.standard_normal(batch * m * k, dtype=np.float32)),
               to_device(device, rng.standard_normal(batch * k * n, dtype=np.float32)),
               empty(device, (batch * m * n,)))
    current, candidates = gemm_candidates(device, problem, count)
    results = {}
    for i, params in enumerate(candidates):
        if progress:
            progress(i, len(candidates))
        ms = time_gemm(device, problem, params, buffers, reps)
        if ms is not None:
            results[params] = ms
    before = results[current]
    best = min(results, key=results.get)
    if results[best] > before * 0.97:  # within noise of what we had: keep it
        best = current
    return best, results[best], before
