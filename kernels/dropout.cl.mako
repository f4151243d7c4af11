## dropout.cl.mako - inverted dropout (PyTorch's nn.Dropout in training), forward and backward,
## with the mask drawn from a counter-based generator instead of stored: the backward pass draws
## the forward's mask again.
##   dropout_fwd  y  = x  * keep / (1 - p)
##   dropout_bwd  dx = dy * keep / (1 - p)     (the same mask for the same arguments)
## keep = 1 with probability 1 - p. A dropped element is multiplied by 0 (a NaN stays NaN, as in
## PyTorch). p = 0: y = x, no random numbers.
##
## Rendered once per layer shape; ``kernel`` picks which kernel this program holds
## ("dropout_fwd" or "dropout_bwd").
##
## Shapes and options (compile-time constants, lower case in the context):
##   n   rows of this device's shard of the batch
##   f   elements per row (a sample's size, e.g. C*H*W; not called `features`, the name of the
##       device's feature flags in every render)
##   p   the drop probability, 0 <= p < 1
##
## Memory layout: x, y, dy, dx float32 [n, f], packed, row-major. y may be x and dx may be dy
## (in place): each element is read and written by one work-item, read first.
##
## Runtime arguments (uint, so that one build serves every step of a run):
##   seed_lo, seed_hi  the Philox key (the host forms it from the run's seed and the layer)
##   step              the training step
##   offset            the index in the whole batch of this shard's first row
##
## The mask: a pure function of (key, step, global element index), so that a resumed run and any
## split of the batch over devices draw the same one. Element (r, j) of the shard has the global
## index g = (offset + r)*f + j. Philox4x32-10 (kernels/philox.cl.mako) with key (seed_lo,
## seed_hi) and counter (b low 32 bits, b high 32 bits, step, 0), b = g / 4, gives four 32-bit
## outputs, one for each of the elements 4b .. 4b+3: element g takes output g % 4. Its uniform is
## u = (output >> 8) * 2^-24 in [0, 1) and keep = u >= p, here the same test in integers:
## (output >> 8) >= ceil(p * 2^24).
## hetcl/codegen/probes/dropout.py holds the numpy reference (dropout_mask).
##
## Tunables (hetcl/codegen/dropout.py: DropoutParams, which also checks them):
##   WG   work-items per work-group
##   VW   Philox blocks per work-item, computed together as uintVW / ulongVW vectors (the
##        64-bit products of a round are one vector multiply on a CPU); 4*VW consecutive
##        elements per work-item. Work-item t owns the shard's blocks t*VW .. t*VW + VW-1:
##        neighbouring work-items take neighbouring blocks (VW=1: 16 bytes each, coalesced on
##        GPUs). A shard's blocks are the Philox blocks its elements fall in: its first element
##        need not start one (a = offset*f % 4, known only at run time), so there are
##        ceil((a + n*f) / 4) <= ceil((n*f + 3) / 4) of them. A work-item whose elements all lie
##        in the shard loads them all, then stores them all (one pointer, constant offsets:
##        LLVM merges the accesses); the first and the last check element by element.
## NDRange: global = (ceil(ceil((n*f + 3)/4) / VW) rounded up to WG), local = (WG); a
## work-item past the shard's blocks returns at once.
##
## Index math: element and block indices are size_t / ulong (a shard and a whole batch can pass
## 2^31 elements).
<%namespace name="philox" file="philox.cl.mako"/>\
<%!
import math
import struct

LANES = "0123456789abcdef"


def vtype(base, vw):
    return base if vw == 1 else "%s%d" % (base, vw)


def lane(v, vw, k):
    return v if vw == 1 else "%s.s%s" % (v, LANES[k])


def iota(vw):
    """The ulongVW vector 0, 1, .. VW-1."""
    return "0UL" if vw == 1 else "(ulong%d)(%s)" % (vw, ", ".join("%dUL" % k for k in range(vw)))


def gather(src, vw, w):
    """Word w of the VW blocks at src, a floatVW: src[w], src[4 + w], .."""
    items = ["%s[%d]" % (src, 4 * k + w) for k in range(vw)]
    return items[0] if vw == 1 else "(float%d)(%s)" % (vw, ", ".join(items))


def factor(vw, threshold, scale, w):
    """floatVW: scale where word w keeps its element, else 0 (vector comparisons give -1 for
    true: the mask of the scale's bits; a scalar one gives 1, so a conditional there)."""
    test = "(r%d >> 8) >= %du" % (w, threshold)
    if vw == 1:
        return "(%s ? %s : 0.0f)" % (test, scale)
    return "as_float%d((%s) & as_int%d((float%d)(%s)))" % (vw, test, vw, vw, scale)
%>
<%
TOTAL = n * f
THRESHOLD = int(math.ceil(p * 2 ** 24))  # keep = (output >> 8) >= THRESHOLD
# 1 / (1 - p) rounded to float32, written with enough digits to name that float exactly
SCALE = "%.9ef" % struct.unpack("f", struct.pack("f", 1.0 / (1.0 - p)))[0]
src, dst = ("x", "y") if kernel == "dropout_fwd" else ("dy", "dx")
UINTV, ULONGV, FLOATV = (vtype(t, VW) for t in ("uint", "ulong", "float"))
def scaled(value, w, k):
    return "%s * %s" % (value, lane("m%d" % w, VW, k)) if THRESHOLD else value
%>
__kernel __attribute__((reqd_work_group_size(${WG}, 1, 1)))
void ${kernel}(__global const float* ${src}, __global float* ${dst}, uint seed_lo, uint seed_hi,
               uint step, uint offset)
{
    const ulong base = (ulong)offset * ${f}UL;   // the global index of the shard's element 0
    const size_t a = (size_t)(base & 3UL);       // its word in its Philox block
    const size_t blk = (size_t)get_global_id(0) * ${VW};   // this work-item's first block
    if (blk >= (a + ${TOTAL}UL + 3) / 4)
        return;
% if THRESHOLD:
    // Philox4x32-10 of the VW counters ((base >> 2) + blk + k, step, 0) (philox.cl.mako).
    const ${ULONGV} b = (ulong)((base >> 2) + blk) + ${iota(VW)};
    ${UINTV} r0 = convert_${UINTV}(b), r1 = convert_${UINTV}(b >> 32);
    ${UINTV} r2 = (${UINTV})(step), r3 = (${UINTV})(0u);
${philox.rounds(UINTV, ULONGV)}\
  % for w in range(4):
    const ${FLOATV} m${w} = ${factor(VW, THRESHOLD, SCALE, w)};
  % endfor
% endif
    // the shard's element of word 0 of block blk; below 0 (wrapped round) for the first block
    // of a shard that starts mid-block, so e + j < n*f fails for the words before the shard
    const size_t e = 4 * blk - a;
    if (4 * blk >= a && e + ${4 * VW} <= ${TOTAL}UL) {   // every element in the shard
        __global const float* s = ${src} + e;
        __global float* d = ${dst} + e;
% for w in range(4):
        const ${FLOATV} v${w} = ${gather("s", VW, w)};   // word ${w} of each block
% endfor
% for k in range(VW):
  % for w in range(4):
        d[${4 * k + w}] = ${scaled(lane("v%d" % w, VW, k), w, k)};
  % endfor
% endfor
    } else {
% for k in range(VW):
  % for w in range(4):
        if (e + ${4 * k + w} < ${TOTAL}UL)
            ${dst}[e + ${4 * k + w}] = ${scaled("%s[e + %d]" % (src, 4 * k + w), w, k)};
  % endfor
% endfor
    }
}
