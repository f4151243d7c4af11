"""Timed search over a kernel's parameter space on one device (GEMM for now: it is where the
time goes). Candidates: the current choice (DB or default), the defaults, and a seeded sample
of the valid space; each is built, run once to warm up, then timed by OpenCL profiling events
(median of `reps`). The current choice is always among the candidates and a candidate replaces
it only when it is measurably faster, confirmed by timing the two in alternation, so tuning
never makes a shape slower than before (a 2-core machine's load drifts during a search)."""
import random
import statistics

import numpy as np

from ..backend.buffers import empty, to_device
from ..backend.device import event_seconds
from ..codegen.gemm import Gemm, tuned_params
from ..codegen.gemm import GemmParams
from ..errors import BuildError

# A challenger must take at most this fraction of the current choice's time to replace it
# (closer than that is the noise of a timing).
MARGIN = 0.97


def _ms(run):
    event = run()
    event.wait()
    return event_seconds(event) * 1e3


def _launcher(device, problem, params, buffers):
    """A function that enqueues one GEMM launch with `params` (built and warmed up), or None
    if they cannot run here."""
    m, n, k, ta, tb, batch = problem
    if not params.valid(device.features):
        return None
    try:
        op = Gemm(device, m, n, k, ta, tb, batch=batch, params=params)
    except (BuildError, ValueError):
        return None
    if op.params != params:  # proven broken here: another variant took its place
        return None
    a, b, c = buffers
    strides = dict(a_stride=m * k, b_stride=k * n, c_stride=m * n) if batch > 1 else {}
    run = lambda: op(a, b, c, **strides)  # noqa: E731
    run().wait()
    return run


def time_gemm(device, problem, params, buffers, reps=5):
    """Milliseconds of one GEMM launch with `params` (median of reps), or None if they cannot
    run here."""
    run = _launcher(device, problem, params, buffers)
    return None if run is None else statistics.median(_ms(run) for _ in range(reps))


def confirm(device, problem, current, challenger, buffers, rounds=15):
    """Medians of the two, timed in alternation (one launch each per round), so that a machine
    that got busier or quieter during the search does not crown a slower kernel."""
    runs = [_launcher(device, problem, p, buffers) for p in (current, challenger)]
    times = [[], []]
    for _ in range(rounds):
        for run, out in zip(runs, times):
            out.append(_ms(run))
    return statistics.median(times[0]), statistics.median(times[1])


def gemm_candidates(device, problem, count, seed=0):
    """-> (current choice, first round of candidates): the current choice, the shape's and the
    device's defaults, the current choice's neighbours (GemmParams.neighbours), then a seeded
    sample of the valid space; `count` besides the current choice in all."""
    m, n, k, ta, tb, batch = problem
    current = tuned_params(device, m, n, k, ta, tb, batch)
    first = [current, GemmParams.for_shape(device.features, m, n, k, ta, tb),
             GemmParams.defaults(device.features)]
    space = GemmParams.valid_space(device.features)
    rng = random.Random(f"{seed}-{problem}")
    sample = rng.sample(space, min(count, len(space)))
    out = []
    for p in first + current.neighbours(device.features) + sample:
        if p not in out and len(out) < count + 1:
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
    # Then one more round from the first round's winner: its neighbours not yet timed (a second
    # step of the local search; up to `count` candidates more).
    for round_ in range(2):
        for i, params in enumerate(candidates):
            if progress:
                progress(i + round_ * (count + 1), 2 * (count + 1))
            ms = time_gemm(device, problem, params, buffers, reps)
            if ms is not None:
                results[params] = ms
        best = min(results, key=results.get)
        candidates = [p for p in best.neighbours(device.features)
                      if p not in results][:count]
    before = results[current]
    best = min(results, key=results.get)
    if best != current and results[best] <= before * MARGIN:
        before, results[best] = confirm(device, problem, current, best, buffers)
    if results[best] > before * MARGIN:  # within noise of what we had: keep it
        return current, before, before
    return best, results[best], before
