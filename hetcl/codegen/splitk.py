"""Split-K GEMM: C (m x n) [+]= A (m x K) @ op(B) for small m*n and a long K (the weight
gradients: K = images * pixels; deep, narrow dense layers). One GEMM over all of K has too few
work-groups to fill a device, so K is cut into P slices computed as one batched GEMM into P
partial results, which a fixed-order reduction then sums (deterministic; no atomics).

P is a tunable with its own tuning-DB entry ("splitk", exact shape): the best P depends on the
device's parallelism, the GEMM's tile shape and the cost of the P partial results. It has no
template of its own; the GEMMs and the reduction inside keep their own entries (the batched
GEMM's bucket follows the slice length K/P).
"""
import dataclasses

from ..backend.buffers import empty
from ..tuning.buckets import shape_bucket
from .eltwise import BiasGrad
from .gemm import Gemm, tuned_params
from .launch import attribute, choose
from .params import KernelParams

MIN_SLICE = 256  # the heuristic's and the search's shortest slice of K


@dataclasses.dataclass(frozen=True)
class SplitKParams(KernelParams):
    """P: the number of slices K is cut into; 1 is one plain GEMM (no partial results)."""
    P: int = 1

    # launches no kernel itself: no template, no work-group (LOCAL); the search is candidates()

    @classmethod
    def for_shape(cls, device, m, n, k, trans_b):
        """The default: enough slices for ~8 work-groups of the GEMM per compute unit, each
        slice at least MIN_SLICE of K."""
        params = tuned_params(device, m, n, k, False, trans_b, 1)
        size, local = params.global_size(m, n), params.local_size()
        groups = size[0] // local[0] * (size[1] // local[1])
        target = 8 * device.profile["compute_units"]
        return cls(int(max(1, min(target // max(groups, 1), k // MIN_SLICE))))

    @classmethod
    def candidates(cls, k, default):
        """The search space: powers of two up to the most slices of at least MIN_SLICE (P=1
        always), and `default` (the heuristic's P, rarely a power of two). It depends on K,
        so it takes the place of the usual space(features)."""
        most = max(1, k // MIN_SLICE)
        return sorted({cls(1 << i) for i in range(most.bit_length())} | {default},
                      key=lambda p: p.P)


def bucket(m, n, k, trans_b):
    """The reduced length k is the one that follows the batch (a weight gradient's)."""
    return shape_bucket(k, f"N{'T' if trans_b else 'N'}-{m}x{n}")


class SplitKGemm:
    """Built once per shape (P from the tuning DB, else SplitKParams.for_shape; `params`
    forces one); ``__call__`` only enqueues. Its launches are recorded once more under this
    object (launch.attribute), so the in-step tuner times the whole split - GEMMs and
    reduction - as the "splitk" entry."""

    def __init__(self, device, m, n, k, trans_b, lda, ldb, params=None):
        key = bucket(m, n, k, trans_b)
        default = SplitKParams.for_shape(device, m, n, k, trans_b)
        chosen = params or choose(device, SplitKParams, "splitk", key, default)
        if chosen.P > k:  # no empty slices (an entry of a larger k of the same class can)
            if params:
                raise ValueError(f"SplitKParams {params}: more slices than K={k}")
            chosen = default
        self.params = chosen
        self.tune = ("splitk", key, lambda: SplitKParams.candidates(k, default))
        self.p = p = chosen.P
        self.kc, self.rest, self.mn = k // p, k % p, m * n
        if p == 1:  # one plain GEMM, no partial sums
            self.direct = Gemm(device, m, n, k, trans_b=trans_b, lda=lda, ldb=ldb)
            return
        self.direct = None
        self.main = Gemm(device, m, n, self.kc, trans_b=trans_b, batch=p, lda=lda, ldb=ldb)
        self.tail = Gemm(device, m, n, self.rest, trans_b=trans_b, lda=lda, ldb=ldb) \
            if self.rest else None
        self.parts = empty(device, (p, m * n))
        self.sum = {acc: BiasGrad(device, p, m * n, 1, "nfs", accumulate=acc)
                    for acc in (False, True)}
        self.b_step = self.kc if trans_b else self.kc * ldb  # B elements per K slice

    def __call__(self, a, b, c, a_off=0, b_off=0, accumulate=False):
        if self.direct is not None:
            return attribute(self, [self.direct(a, b, c, a_off=a_off, b_off=b_off,
                                                beta=1.0 if accumulate else 0.0)])
        events = [self.main(a, b, self.parts, a_off=a_off, b_off=b_off, a_stride=self.kc,
                            b_stride=self.b_step, c_stride=self.mn)]
        if self.tail is not None:
            events.append(self.tail(a, b, self.parts, a_off=a_off + self.p * self.kc,
                                    b_off=b_off + self.b_step * self.p, beta=1.0))
        events.append(self.sum[accumulate](self.parts, c))
        return attribute(self, events)
