"""The prover's probes (hetcl/codegen/prover.py PROBES) of the eltwise, pool, avgpool, loss,
update, conv2d and batchnorm families on every device.

Each wrapper is built at a few shapes (sizes that are multiples of nothing, partial vectors and
groups, non-default parameters); the build it asks for - params and template context - is
recorded and handed to its family's probe as the prover would hand it over (through JSON). A
correct variant must come out within 1e-5, and the probe must build the very program the
wrapper built (the same params and context: the same source). A wrong variant - the probe's
program rendered for a neighbouring context, so that it computes something else on the same
buffers, as a miscompiled variant would - must fail the prover's tolerance.
"""
import json

import pytest

from hetcl.codegen import launch, prove, prover
from hetcl.codegen.avgpool import AvgPoolBwd, AvgPoolFwd, AvgPoolParams
from hetcl.codegen.batchnorm import BatchNormSumsParams, BnSums
from hetcl.codegen.conv import Col2Im, Col2ImParams, Im2Col, Im2ColParams, WeightFlip
from hetcl.codegen.eltwise import ActBwd, BiasAct, BiasGrad, BiasGradParams, EltwiseParams
from hetcl.codegen.loss import LossParams, SigmoidBCE, SoftmaxCE
from hetcl.codegen.pool import MaxPoolBwd, MaxPoolFwd, PoolParams
from hetcl.codegen.update import (AdamMulti, Axpby, SGDMulti, SGDStep, SumSquares,
                                  UpdateParams)

TOL = 1e-5

# id -> a function of the device that builds one wrapper
CASES = {
    # eltwise: gathered vector lanes (s % VW != 0), dense rows, s a multiple of VW, no bias
    "bias_act-relu-fns": lambda d: BiasAct(d, 7, 5, 143, "relu", "fns",
                                           params=EltwiseParams(32, 2, 4)),
    "bias_act-sigmoid-nobias": lambda d: BiasAct(d, 13, 10, 1, "sigmoid", bias=False),
    "bias_act-none-fns-vw16": lambda d: BiasAct(d, 3, 4, 16, "none", "fns",
                                                params=EltwiseParams(16, 1, 16)),
    "act_bwd-relu-fns": lambda d: ActBwd(d, 7, 5, 143, "relu", "fns",
                                         params=EltwiseParams(128, 1, 8)),
    "act_bwd-sigmoid": lambda d: ActBwd(d, 13, 10, 1, "sigmoid"),
    "bias_grad-nfs": lambda d: BiasGrad(d, 7, 5, 143, params=BiasGradParams(64, 2, 4, 0)),
    "bias_grad-fns-acc": lambda d: BiasGrad(d, 13, 10, 3, "fns", accumulate=True,
                                            params=BiasGradParams(4, 1, 16, 1)),
    "bias_grad-dense": lambda d: BiasGrad(d, 13, 10, 1),
    # pool: overlapping windows with a ragged edge, both decompositions, a looped window
    "maxpool_fwd-overlap": lambda d: MaxPoolFwd(d, (3, 5, 13, 11), (3, 3), (2, 2)),
    "maxpool_fwd-planes": lambda d: MaxPoolFwd(d, (3, 5, 13, 11), (3, 2), (1, 2),
                                               params=PoolParams(4, 2, 1)),
    "maxpool_fwd-looped": lambda d: MaxPoolFwd(d, (2, 2, 12, 12), (6, 6), (1, 1),
                                               params=PoolParams(32, 2, 0)),
    "maxpool_bwd-overlap": lambda d: MaxPoolBwd(d, (2, 3, 7, 9), (3, 3), (1, 1),
                                                params=PoolParams(16, 4, 0)),
    "maxpool_bwd-planes": lambda d: MaxPoolBwd(d, (3, 5, 13, 11), (3, 3), (2, 2),
                                               params=PoolParams(4, 2, 1)),
    "avgpool_fwd-overlap": lambda d: AvgPoolFwd(d, (3, 5, 13, 11), (3, 3), (2, 2),
                                                params=AvgPoolParams(32, 2)),
    "avgpool_bwd-gaps": lambda d: AvgPoolBwd(d, (2, 3, 10, 9), (2, 2), (3, 3)),
    "avgpool_bwd-global": lambda d: AvgPoolBwd(d, (3, 4, 8, 8), (8, 8), (1, 1),
                                               params=AvgPoolParams(16, 4)),
    # loss: a partial group of rows, more work-items than classes, uchar labels, one class
    "softmax_ce-tree": lambda d: SoftmaxCE(d, 13, 10, params=LossParams(4, 16)),
    "softmax_ce-wide": lambda d: SoftmaxCE(d, 5, 300, params=LossParams(32, 4)),
    "sigmoid_bce-uchar": lambda d: SigmoidBCE(d, 57, 10, "uchar", params=LossParams(1, 4)),
    "softmax_ce-one": lambda d: SoftmaxCE(d, 1, 1, "uchar"),
    # update: tails, one element, several tensors of odd sizes
    "sgd-nesterov": lambda d: SGDStep(d, 1003, nesterov=True, params=UpdateParams(32, 2, 4)),
    "sgd-one": lambda d: SGDStep(d, 1),
    "sgd_multi": lambda d: SGDMulti(d, (1, 1003, 64, 5), params=UpdateParams(16, 1, 1)),
    "sgd_multi-nesterov": lambda d: SGDMulti(d, (7, 300), nesterov=True,
                                             params=UpdateParams(64, 4, 16)),
    "adam_multi": lambda d: AdamMulti(d, (1, 1003, 64, 5), params=UpdateParams(16, 1, 1)),
    "adam_multi-w": lambda d: AdamMulti(d, (7, 300), decoupled=True,
                                        params=UpdateParams(64, 4, 16)),
    "adam_multi-clip": lambda d: AdamMulti(d, (5, 300), clip=True),
    "sgd_multi-clip": lambda d: SGDMulti(d, (7, 300), clip=True, params=UpdateParams(16, 2, 8)),
    "sumsq_multi": lambda d: SumSquares(d, (1, 1003, 64, 5), params=UpdateParams(16, 2, 4)),
    "axpby": lambda d: Axpby(d, 1003, params=UpdateParams(64, 4, 16)),
    "axpby-one": lambda d: Axpby(d, 1),
    # conv2d: padding, strides, ragged channel groups, both decompositions, other plane orders
    "im2col-columns": lambda d: Im2Col(d, (5, 13, 11), (3, 2), (2, 1), (1, 2), 4,
                                       params=Im2ColParams(32, 8, 4)),
    "im2col-planes": lambda d: Im2Col(d, (3, 7, 6), (3, 3), (1, 1), (2, 2), 3,
                                      params=Im2ColParams(4, 2, 1, 1)),
    "im2col-strided": lambda d: Im2Col(d, (3, 5, 4), (3, 3), (1, 1), (1, 1), 2,
                                       planes=(20, 47)),
    "col2im-columns": lambda d: Col2Im(d, (5, 13, 11), (3, 3), (2, 1), (1, 2), 4,
                                       params=Col2ImParams(16, 2, 2)),
    "col2im-planes": lambda d: Col2Im(d, (3, 7, 6), (5, 5), (2, 2), (0, 0), 3,
                                      params=Col2ImParams(1, 1, 1, 1)),
    "wflip": lambda d: WeightFlip(d, 5, 3, (3, 2)),
    # batchnorm: statistics finalised in the same launch, several channels per group, 33 of them
    "bn_sums-fused": lambda d: BnSums(d, 7, 33, 1, finalize=True,
                                      params=BatchNormSumsParams(4, 8, 1, 0)),
}

# Wrong variants: id -> the context changes the probe's program is rendered with. Each keeps
# the kernel's arguments and reads no more than the right program would.
WRONG = {
    "bias_act-relu-fns": {"act": "sigmoid"},
    "act_bwd-relu-fns": {"act": "none"},
    "bias_grad-nfs": {"accumulate": 1},
    "maxpool_fwd-overlap": {"images": 2},      # the last image is never written
    "maxpool_bwd-planes": {"images": 2},
    "avgpool_fwd-overlap": {"images": 2},
    "avgpool_bwd-gaps": {"images": 1},         # the second image is never written
    "softmax_ce-tree": {"label_type": "uchar"},  # int labels read as bytes
    "sigmoid_bce-uchar": {"n": 56},            # the last row is never written
    "sgd-nesterov": {"nesterov": 0},
    "sgd_multi": {"nesterov": 1},
    "adam_multi": {"decoupled": 1},
    "sgd_multi-clip": {"nesterov": 1},
    "axpby": {"size": 1002},
    "im2col-columns": {"images": 3},
    "col2im-planes": {"images": 2},
    "wflip": {"c": 3, "h": 5},                 # filters and channels swapped
    "bn_sums-fused": {"n": 6},                 # the last row is never summed
}

FAMILIES = {"eltwise": ("bias_act", "act_bwd", "bias_grad"),
            "pool": ("maxpool",), "avgpool": ("avgpool",), "loss": ("softmax_ce", "sigmoid_bce"),
            "update": ("sgd", "adam", "sumsq", "axpby"), "conv2d": ("im2col", "col2im", "wflip"),
            "batchnorm": ("bn_",)}


def family(case):
    return next(name for name, kinds in FAMILIES.items() if case.startswith(kinds))


def record_builds(monkeypatch, change=None):
    """A list that collects (params, context) of every build the wrappers ask for; change: a
    dict merged into the context before the program is built (a wrong variant)."""
    builds = []

    def build(device, params, options="", **context):
        builds.append((params, context))
        return prove.build(device, params, options=options, **dict(context, **(change or {})))
    monkeypatch.setattr(launch, "build", build)
    return builds


def built(device, monkeypatch, case):
    """(params, context) of the one program that wrapper `case` built."""
    builds = record_builds(monkeypatch)
    CASES[case](device)
    assert len(builds) == 1, builds
    return builds[0]


def as_the_prover_gets_them(params, context):
    """params and context after the JSON trip from prove.py to the prover."""
    sent = json.loads(json.dumps({"params": params.as_dict(), "context": context}))
    return type(params)(**sent["params"]), prover._tuples(sent["context"])


def run_probe(device, params, context):
    probe = prover._probe(params.template)
    assert probe is not None, f"no probe registered for {params.template}"
    params, context = as_the_prover_gets_them(params, context)
    return probe(device, params, **context)


@pytest.mark.parametrize("case", sorted(CASES))
def test_probe_passes_a_correct_variant(device, monkeypatch, case):
    params, context = built(device, monkeypatch, case)
    builds = record_builds(monkeypatch)
    error = run_probe(device, params, context)
    assert error < TOL, f"{case} {params}: relative error {error:.3g}"
    assert builds == [(params, context)], "the probe built another program than the wrapper"


@pytest.mark.parametrize("fam", sorted(FAMILIES))
def test_probe_catches_a_wrong_variant(device, monkeypatch, fam):
    for case in sorted(c for c in WRONG if family(c) == fam):
        params, context = built(device, monkeypatch, case)
        record_builds(monkeypatch, change=WRONG[case])
        error = run_probe(device, params, context)
        # (NaN - an element never written - fails the prover's `error <= TOLERANCE` too)
        assert not error <= prover.TOLERANCE, f"{case}: a wrong variant passed ({error:.3g})"


@pytest.mark.parametrize("fam", sorted(FAMILIES))
def test_prover_proves_each_family(device, monkeypatch, fam):
    """prover.prove, as the child runs it, finds the probe and accepts a correct variant."""
    case = min(c for c in CASES if family(c) == fam)
    params, context = built(device, monkeypatch, case)
    request = json.loads(json.dumps(prove._request(device, params, "", None, context)))
    assert prover.prove(request, {device.fingerprint: device}) == {"ok": True}


def test_vector_probe_ignores_the_warnings_of_its_scalar_build(device, monkeypatch):
    """A warning every build of the probe gets (NVIDIA's compiler warns of any noinline kernel
    function) says nothing of the width: the probe passes; one the wide build gets alone fails
    it."""
    from hetcl.codegen import vector_probe
    from hetcl.errors import ProbeFailed
    real = vector_probe._build

    def warning_at(widths, text):
        def build(dev, params):
            program, warned = real(dev, params)
            return program, warned + ([text] if params.VW in widths else [])
        return build
    monkeypatch.setattr(vector_probe, "_build", warning_at((1, 4), "the driver's own remark"))
    assert vector_probe.probe(device, vector_probe.VectorProbeParams(4)) == 0
    monkeypatch.setattr(vector_probe, "_build", warning_at((4,), "4-wide vectors emulated"))
    with pytest.raises(ProbeFailed, match="warns on 4-wide vectors: 4-wide vectors emulated"):
        vector_probe.probe(device, vector_probe.VectorProbeParams(4))
