"""The dropout family's probe and its numpy reference: Philox4x32-10 (Salmon et al., SC'11, as
Random123 defines it) in vectorised uint64 arithmetic, and the mask kernels/dropout.cl.mako
draws with it (the template header documents the counter and the uniform)."""
import numpy as np

from . import relative_error

MASK32 = np.uint64(0xFFFFFFFF)
_M = (np.uint64(0xD2511F53), np.uint64(0xCD9E8D57))   # round multipliers
_W = (np.uint64(0x9E3779B9), np.uint64(0xBB67AE85))   # key bumps (Weyl sequence)


def philox4x32(counter, key, rounds=10):
    """Philox4x32-`rounds` of counter (4 arrays or ints, broadcast together) under key (2 of
    them): the 4 output words, a uint32 array [4, ...]."""
    c = [np.asarray(v, np.uint64) & MASK32 for v in counter]
    c = np.broadcast_arrays(*c)
    k0, k1 = (np.asarray(v, np.uint64) & MASK32 for v in key)
    for r in range(rounds):
        if r:
            k0, k1 = (k0 + _W[0]) & MASK32, (k1 + _W[1]) & MASK32
        p0, p1 = _M[0] * c[0], _M[1] * c[2]   # 32 x 32 -> 64 bits: no overflow
        c = [(p1 >> np.uint64(32)) ^ c[1] ^ k0, p1 & MASK32,
             (p0 >> np.uint64(32)) ^ c[3] ^ k1, p0 & MASK32]
    return np.stack(c).astype(np.uint32)


def dropout_mask(seed_lo, seed_hi, step, offset, n, features, p):
    """keep, a bool array [n, features]: element (r, j) of a shard whose first row is row
    `offset` of the whole batch, its global index g = (offset + r)*features + j, is kept where
    the Philox output g % 4 of counter (g // 4, step) gives u = (output >> 8) * 2^-24 >= p."""
    g = (np.uint64(offset) + np.arange(n, dtype=np.uint64))[:, None] * np.uint64(features) \
        + np.arange(features, dtype=np.uint64)
    blocks = g >> np.uint64(2)
    first = blocks.min()
    b = np.arange(first, blocks.max() + np.uint64(1), dtype=np.uint64)
    words = philox4x32((b, b >> np.uint64(32), step, 0), (seed_lo, seed_hi))
    out = words[(g & np.uint64(3)).astype(np.intp), (blocks - first).astype(np.intp)]
    return (out >> np.uint32(8)).astype(np.float64) * 2.0 ** -24 >= p


def dropout_reference(x, keep, p):
    """x * keep / (1 - p) as the kernels compute it: float32, the scale rounded to float32."""
    scale = np.float32(1.0 / (1.0 - p))
    return (x.astype(np.float32) * np.where(keep, scale, np.float32(0))).astype(np.float32)


def dropout(device, params, kernel, n, f, p):
    """The prover's check of one dropout variant on the shape it was built for: the largest
    error of y (forward) or dx (backward) relative to its largest magnitude, the mask drawn for
    a shard that does not start a Philox block. The output starts poisoned."""
    from ...backend.buffers import empty, to_device
    from ..dropout import DropoutBwd, DropoutFwd
    x = np.random.default_rng(0).standard_normal((n, f)).astype(np.float32)
    seed_lo, seed_hi, step, offset = 0x9E3779B9, 7, 5, 3   # (3*f) % 4 != 0 for odd f
    ref = dropout_reference(x, dropout_mask(seed_lo, seed_hi, step, offset, n, f, p), p)
    cls = DropoutFwd if kernel == "dropout_fwd" else DropoutBwd
    y = empty(device, x.shape).fill(np.nan)
    cls(device, n, f, p, params=params)(to_device(device, x), y, seed_lo, seed_hi, step, offset)
    return relative_error(y.get(), ref)
