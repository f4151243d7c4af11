"""The one tuning-bucket schema, shared by the kernel wrappers, the tuner and the DB: which
shapes a tuned entry serves.

GEMM:          "<transposes>-<m>x<n>x<k>[-batched]", each of m, n, k rounded up to a power of
               two (gemm_bucket).
Every other:   "n<N> <rest>": N the kernel's leading dimension (the batch of a layer's kernels,
               the images of an im2col chunk, the reduced length of a split-K GEMM) rounded up
               to a power of two, <rest> its other dimensions and options exactly
               (shape_bucket).
A lookup that misses its bucket takes the entry of the same kernel whose shape differs only in
that batch-like dimension, by at most NEAREST_CLASSES classes, the nearest (nearest): a shard of
a split batch (208 or 160 of 256: the same class; 100: the next) finds the entries tuned on the
whole batch. Parameters tuned for four times the work and more are not taken: a cifar-cnn step
of 48 images ran slower with the entries of 256 than with the defaults (docs/benchmarks.md,
"Tuning"). Buckets written before this schema are read in it (upgrade).
"""
import math
import re

NEAREST_CLASSES = 1  # how many powers of two a lookup may reach from its own class

_SHAPE = re.compile(r"n(\d+) (.*)")
_GEMM = re.compile(r"([NT]{2})-(\d+)x(\d+)x(\d+)(-batched)?")


def pow2(x):
    p = 1
    while p < x:
        p *= 2
    return p


def gemm_bucket(m, n, k, trans_a, trans_b, batch):
    return f"{'T' if trans_a else 'N'}{'T' if trans_b else 'N'}-{pow2(m)}x{pow2(n)}x{pow2(k)}" \
           f"{'-batched' if batch > 1 else ''}"


def shape_bucket(n, rest):
    return f"n{pow2(n)} {rest}"


def _parts(bucket):
    """(the fixed part, the batch-like sizes) of a bucket, or None."""
    m = _SHAPE.fullmatch(bucket)
    if m:
        return m.group(2), (int(m.group(1)),)
    m = _GEMM.fullmatch(bucket)
    if m:
        return f"{m.group(1)}{m.group(5) or ''}", tuple(int(v) for v in m.group(2, 3, 4))
    return None


def nearest(bucket, buckets):
    """The bucket among `buckets` that serves `bucket`, which has no entry of its own: same
    fixed part, sizes that differ in one dimension only (a GEMM's batch is one of m, n, k) and
    there by at most NEAREST_CLASSES powers of two, the nearest (the larger on a tie). None if
    there is none."""
    mine = _parts(bucket)
    if mine is None:
        return None
    best = None
    for other in buckets:
        theirs = _parts(other)
        if theirs is None or theirs[0] != mine[0]:
            continue
        differ = [(a, b) for a, b in zip(mine[1], theirs[1]) if a != b]
        if len(differ) != 1:
            continue
        a, b = differ[0]
        key = (abs(math.log2(a) - math.log2(b)), -b)
        if key[0] > NEAREST_CLASSES:
            continue
        if best is None or key < best[0]:
            best = (key, other)
    return best[1] if best else None


_OLD_CONV = re.compile(r"(.*) n(\d+)( planes\S+)?")
_OLD_LEADING = re.compile(r"(\d+)x(.*)")
_OLD_SPLITK = re.compile(r"(N[NT])-(\d+)x(\d+)x(\d+)")


def upgrade(kernel, bucket):
    """A bucket of the exact-shape form that came before this schema, in this schema."""
    if kernel == "gemm" or _SHAPE.fullmatch(bucket):
        return bucket
    if kernel == "splitk":
        m = _OLD_SPLITK.fullmatch(bucket)
        return shape_bucket(int(m.group(4)), f"{m.group(1)}-{m.group(2)}x{m.group(3)}") \
            if m else bucket
    if kernel in ("im2col", "col2im", "conv_dx"):
        m = _OLD_CONV.fullmatch(bucket)
        return shape_bucket(int(m.group(2)), m.group(1) + (m.group(3) or "")) if m else bucket
    m = _OLD_LEADING.fullmatch(bucket)
    return shape_bucket(int(m.group(1)), m.group(2)) if m else bucket
