"""The batch-normalisation kernels (kernels/batchnorm.cl.mako) against the float64 numpy
reference of hetcl/codegen/probes/norm.py on every device: forward statistics finalised in the
same launch and separately, the normalisation with each activation, the running statistics,
evaluation mode, the backward sums, dgamma, dbeta and dx (the reference itself checked against
finite differences), statistics of a batch split over two calls finalised with the whole
batch's count, every tuning point of the reductions, several channels per work-group over an
odd channel count and the prover's probe. Odd shapes (multiples of nothing, BatchNorm1D's
s = 1, one channel). Outputs start poisoned (NaN), so a missed element cannot pass."""
import numpy as np
import pytest

from hetcl.backend.buffers import empty, to_device
from hetcl.codegen.batchnorm import (BatchNormParams, BatchNormSumsParams, BnApply, BnBwdDx,
                                     BnBwdSums, BnEvalCoef, BnFinalize, BnSums)
from hetcl.codegen.probes import norm
from hetcl.codegen.probes.norm import (bn_apply_reference, bn_backward_reference,
                                       bn_eval_coef_reference, bn_finalize_reference,
                                       bn_forward_reference, bn_totals_reference)

TOL = 1e-5
VAR_TOL = 1e-4  # what goes through var = E[x^2] - mean^2 (cancellation in float32)
ACTS = ("none", "relu", "sigmoid")
SHAPES = [(7, 3, 25), (1, 5, 13), (7, 33, 1), (2, 1, 1)]  # (n, c, s); s = 1: BatchNorm1D
EPS, MOMENTUM = 1e-3, 0.25  # not the defaults: the constants must reach the kernels


def rel(a, b):
    return float(np.abs(a - b).max() / max(1.0, np.abs(b).max()))


def inputs(shape, seed=0):
    """x (per-channel offsets), gamma, beta, running_mean, running_var (positive)."""
    n, c, s = shape
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 2 + rng.standard_normal((c, 1))).astype(np.float32)
    gamma, beta, rm, rv = rng.standard_normal((4, c)).astype(np.float32)
    return x, gamma, beta, rm, (np.abs(rv) + 0.5).astype(np.float32)


def poisoned(device, *shapes):
    return [empty(device, shape).fill(np.nan) for shape in shapes]


def forward(device, x, vectors, act, fused, count=None, sums_params=None, params=None):
    """-> totals, saved, coef, running_mean, running_var, y of one training forward."""
    n, c, s = x.shape
    count = count or float(n * s)
    totals, saved, coef, y = poisoned(device, (2, c), (2, c), (2, c), (n, c, s))
    gamma, beta, rm, rv = (to_device(device, v) for v in vectors)
    xd = to_device(device, x)
    stats = (gamma, beta, rm, rv, saved, coef)
    if fused:
        BnSums(device, n, c, s, True, EPS, MOMENTUM, params=sums_params)(xd, totals, *stats,
                                                                         count)
    else:
        BnSums(device, n, c, s, params=sums_params)(xd, totals)
        BnFinalize(device, c, EPS, MOMENTUM)(totals, *stats, count)
    BnApply(device, n, c, s, act, params=params)(xd, coef, y)
    return [a.get() for a in (totals, saved, coef, rm, rv, y)]


def check_forward(got, x, vectors, act, count=None):
    totals, saved, coef, rm, rv, y = got
    n, c, s = x.shape
    ref_totals = bn_totals_reference(x)
    assert rel(totals, ref_totals) < TOL
    ref = bn_finalize_reference(ref_totals, *vectors, count or n * s, EPS, MOMENTUM)
    for name, a, b in zip(("saved", "coef", "running_mean", "running_var"), (saved, coef, rm, rv),
                          ref):
        assert rel(a, b) < VAR_TOL, name
    assert rel(y, bn_apply_reference(x, ref[1], act)) < VAR_TOL
    return ref


@pytest.mark.parametrize("fused", [True, False], ids=["fused", "separate"])
@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_matches_numpy(device, shape, act, fused):
    x, *vectors = inputs(shape)
    got = forward(device, x, vectors, act, fused)
    check_forward(got, x, vectors, act)
    # ... and the plain training-mode batch norm of the whole batch
    y_ref, saved_ref = bn_forward_reference(x, *vectors[:2], act, EPS)
    assert rel(got[1], saved_ref) < VAR_TOL and rel(got[5], y_ref) < VAR_TOL


def test_statistics_of_a_batch_split_in_two(device):
    """Each half summed by a BnSums of its own, the totals added, finalised with the whole
    batch's count: the statistics of the whole batch."""
    x, *vectors = inputs((9, 4, 6), seed=1)
    halves = [x[:5], x[5:]]
    totals = []
    for half in halves:
        n, c, s = half.shape
        t = poisoned(device, (2, c))[0]
        BnSums(device, n, c, s)(to_device(device, half), t)
        totals.append(t.get())
        assert rel(totals[-1], bn_totals_reference(half)) < TOL
    whole = to_device(device, totals[0] + totals[1])
    saved, coef = poisoned(device, (2, 4), (2, 4))
    vec = [to_device(device, v) for v in vectors]
    BnFinalize(device, 4, EPS, MOMENTUM)(whole, *vec, saved, coef, float(9 * 6))
    ref = bn_finalize_reference(bn_totals_reference(x), *vectors, 9 * 6, EPS, MOMENTUM)
    for got, want in zip((saved, coef, vec[2], vec[3]), ref):
        assert rel(got.get(), want) < VAR_TOL
    assert rel(saved.get(), bn_forward_reference(x, *vectors[:2], "none", EPS)[1]) < VAR_TOL


def test_fused_finalize_takes_a_larger_count(device):
    """count > n*s (other devices' rows): the statistics divide by count, not n*s."""
    x, *vectors = inputs((5, 3, 7), seed=2)
    got = forward(device, x, vectors, "relu", fused=True, count=4.0 * 35)
    check_forward(got, x, vectors, "relu", count=4.0 * 35)


def test_eval_coef(device):
    _, *vectors = inputs((1, 33, 1), seed=3)
    coef = poisoned(device, (2, 33))[0]
    BnEvalCoef(device, 33, EPS)(*(to_device(device, v) for v in vectors), coef)
    assert rel(coef.get(), bn_eval_coef_reference(*vectors, EPS)) < TOL


def backward(device, x, y, dy, saved, coef, act, count=None, sums_params=None, params=None):
    """-> totals, dgamma, dbeta, dx."""
    n, c, s = x.shape
    totals, dgamma, dbeta, dx = poisoned(device, (2, c), (c,), (c,), (n, c, s))
    xd, yd, dyd, sd, cd = (to_device(device, a) for a in (x, y, dy, saved, coef))
    BnBwdSums(device, n, c, s, act, params=sums_params)(xd, yd, dyd, sd, totals, dgamma, dbeta)
    BnBwdDx(device, n, c, s, act, params=params)(xd, yd, dyd, sd, cd, totals, dx,
                                                 count or float(n * s))
    return [a.get() for a in (totals, dgamma, dbeta, dx)]


def backward_case(shape, act, seed=4):
    """x, y, dy, saved, coef (float32, as the forward leaves them), gamma."""
    x, gamma, beta, _, _ = inputs(shape, seed)
    y, saved = bn_forward_reference(x, gamma, beta, act, EPS)
    dy = np.random.default_rng(seed + 1).standard_normal(shape).astype(np.float32)
    coef = np.stack([gamma * saved[1], beta - saved[0] * gamma * saved[1]])
    return [a.astype(np.float32) for a in (x, y, dy, saved, coef)] + [gamma]


def check_backward(got, x, y, dy, saved, gamma, act):
    totals, dgamma, dbeta, dx = got
    dx_ref, dgamma_ref, dbeta_ref = bn_backward_reference(x, y, dy, gamma, saved, act)
    assert rel(totals, np.stack([dbeta_ref, dgamma_ref])) < TOL
    assert rel(dgamma, dgamma_ref) < TOL and rel(dbeta, dbeta_ref) < TOL
    assert rel(dx, dx_ref) < TOL


@pytest.mark.parametrize("act", ACTS)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_backward_matches_numpy(device, shape, act):
    x, y, dy, saved, coef, gamma = backward_case(shape, act)
    got = backward(device, x, y, dy, saved, coef, act)
    check_backward(got, x, y, dy, saved, gamma, act)


@pytest.mark.parametrize("act", ACTS)
def test_backward_reference_matches_finite_differences(act):
    """The reference's dx, dgamma, dbeta are the gradients of sum(dy * y) of the forward
    reference (central differences in float64)."""
    shape = (3, 2, 4)
    x, gamma, beta, _, _ = (a.astype(np.float64) for a in inputs(shape, seed=5))
    dy = np.random.default_rng(6).standard_normal(shape)
    y, saved = bn_forward_reference(x, gamma, beta, act, EPS)
    dx, dgamma, dbeta = bn_backward_reference(x, y, dy, gamma, saved, act)
    loss = lambda x, g, b: float((dy * bn_forward_reference(x, g, b, act, EPS)[0]).sum())  # noqa

    def numeric(args, k):
        out = np.zeros_like(args[k])
        for i in np.ndindex(out.shape):
            plus, minus = [a.copy() for a in args], [a.copy() for a in args]
            plus[k][i] += 1e-6
            minus[k][i] -= 1e-6
            out[i] = (loss(*plus) - loss(*minus)) / 2e-6
        return out
    args = [x, gamma, beta]
    for k, analytic in enumerate((dx, dgamma, dbeta)):
        assert rel(analytic, numeric(args, k)) < 1e-6, k


def test_backward_with_the_whole_batch_count(device):
    """dx of one device's rows, with the totals and count of the whole batch (two halves)."""
    x, y, dy, saved, coef, gamma = backward_case((8, 3, 5), "sigmoid", seed=7)
    dx_ref, dgamma_ref, dbeta_ref = bn_backward_reference(x, y, dy, gamma, saved, "sigmoid")
    parts = [backward(device, x[a:b], y[a:b], dy[a:b], saved, coef, "sigmoid")
             for a, b in ((0, 3), (3, 8))]
    assert rel(parts[0][0] + parts[1][0], np.stack([dbeta_ref, dgamma_ref])) < TOL
    whole = (parts[0][0] + parts[1][0]).astype(np.float32)
    dx = poisoned(device, (5, 3, 5))[0]
    BnBwdDx(device, 5, 3, 5, "sigmoid")(*(to_device(device, a) for a in (
        x[3:], y[3:], dy[3:], saved, coef, whole)), dx, float(8 * 5))
    assert rel(dx.get(), dx_ref[3:]) < TOL


def test_reductions_every_tuning_point(device):
    """A sample of the tuning space of bn_sums and bn_bwd_sums (every 13th point: each value of
    each tunable, each VW with each BLOCKED) on an odd shape whose s takes float4 units
    (s % 4 == 0) and gathers float8 and float16 ones with a partial last unit."""
    shape, act = (5, 3, 12), "relu"
    x, *vectors = inputs(shape, seed=8)
    bx, by, bdy, bsaved, bcoef, gamma = backward_case(shape, act, seed=9)
    space = BatchNormSumsParams.valid_space(device.features)
    assert len(space) == 208
    for params in space[::13]:
        check_forward(forward(device, x, vectors, act, True, sums_params=params), x, vectors,
                      act)
        got = backward(device, bx, by, bdy, bsaved, bcoef, act, sums_params=params)
        check_backward(got, bx, by, bdy, bsaved, gamma, act)


@pytest.mark.parametrize("params", [
    BatchNormSumsParams(WGS=4, FPG=8, VW=1, BLOCKED=0),    # 33 channels: a partial group
    BatchNormSumsParams(WGS=1, FPG=32, VW=4, BLOCKED=1),   # gathered lanes, no tree
    BatchNormSumsParams(WGS=16, FPG=2, VW=16, BLOCKED=0),  # a partial last unit
], ids=str)
def test_several_channels_per_group_odd_count(device, params):
    shape, act = (7, 33, 1), "sigmoid"
    x, *vectors = inputs(shape, seed=10)
    check_forward(forward(device, x, vectors, act, False, sums_params=params), x, vectors, act)
    bx, by, bdy, bsaved, bcoef, gamma = backward_case(shape, act, seed=11)
    got = backward(device, bx, by, bdy, bsaved, bcoef, act, sums_params=params)
    check_backward(got, bx, by, bdy, bsaved, gamma, act)


@pytest.mark.parametrize("params", [BatchNormParams(16, 2, 1), BatchNormParams(32, 4, 2),
                                    BatchNormParams(64, 1, 8), BatchNormParams(16, 1, 16)],
                         ids=str)
def test_elementwise_points(device, params):
    """bn_apply and bn_bwd_dx with vectors that straddle channels (s = 25) and tails."""
    shape, act = (7, 3, 25), "relu"
    x, *vectors = inputs(shape, seed=12)
    check_forward(forward(device, x, vectors, act, True, params=params), x, vectors, act)
    bx, by, bdy, bsaved, bcoef, gamma = backward_case(shape, act, seed=13)
    check_backward(backward(device, bx, by, bdy, bsaved, bcoef, act, params=params),
                   bx, by, bdy, bsaved, gamma, act)


@pytest.mark.parametrize("kernel,context", [
    ("bn_sums", dict(n=7, c=3, s=25, finalize=0)),
    ("bn_sums", dict(n=7, c=33, s=1, finalize=1, eps=1e-5, momentum=0.1)),
    ("bn_finalize", dict(c=5, eps=1e-5, momentum=0.1)),
    ("bn_eval_coef", dict(c=5, eps=1e-5)),
    ("bn_apply", dict(n=1, c=5, s=13, act="sigmoid")),
    ("bn_bwd_sums", dict(n=7, c=3, s=25, act="relu")),
    ("bn_bwd_dx", dict(n=2, c=1, s=3, act="sigmoid")),
])
def test_probe_passes_the_default_variant(device, kernel, context):
    op = {"bn_sums": lambda: BnSums(device, context["n"], context["c"], context["s"],
                                    bool(context["finalize"])),
          "bn_finalize": lambda: BnFinalize(device, context["c"]),
          "bn_eval_coef": lambda: BnEvalCoef(device, context["c"]),
          "bn_apply": lambda: BnApply(device, 1, 5, 13, "sigmoid"),
          "bn_bwd_sums": lambda: BnBwdSums(device, 7, 3, 25, "relu"),
          "bn_bwd_dx": lambda: BnBwdDx(device, 2, 1, 3, "sigmoid")}[kernel]()
    assert norm.batchnorm(device, op.params, kernel, **context) < TOL


def test_checks_its_arguments(device):
    with pytest.raises(ValueError, match="act="):
        BnApply(device, 2, 3, 4, "tanh")
    with pytest.raises(ValueError, match="too many"):
        BnBwdDx(device, 2 ** 16, 2 ** 10, 2 ** 5, "none")
    with pytest.raises(ValueError, match="eps="):
        BnFinalize(device, 3, eps=0)
    x, totals = to_device(device, np.zeros((2, 3, 1), np.float32)), empty(device, (2, 3))
    bufs = poisoned(device, *[(3,)] * 4 + [(2, 3)] * 2)
    with pytest.raises(ValueError, match="more than one value"):
        BnSums(device, 2, 3, 1, finalize=True)(x, totals, *bufs, 1.0)
    with pytest.raises(ValueError, match="BnFinalize's arguments"):
        BnSums(device, 2, 3, 1, finalize=True)(x, totals)
