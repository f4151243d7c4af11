## eltwise.cl.mako - the element-wise kernels around a layer's linear part (dense or conv GEMM):
##   bias_act   y = act(z + b[f])                 forward: fused bias + activation
##   act_bwd    dz = dy * act'(y)                 backward through the activation (+ transpose)
##   bias_grad  db[f] (+)= sum over n, s of dz    backward: bias gradient, deterministic
## One kernel per render, chosen by the context name `kernel`; each lives in its own <%def> so
## that it needs only its own parameters (strict_undefined looks names up per def).
##
## Memory layout (float32, packed; element offsets; n = batch rows, f = features / channels,
## s = spatial size H*W, 1 for a dense layer):
##   "nfs": X[nn][ff][ss] at X[(nn*F + ff)*S + ss]   NCHW images; [N, F] rows for a dense layer
##   "fns": X[ff][nn][ss] at X[(ff*N + nn)*S + ss]   what a conv GEMM W[F, CKK] @ col[CKK, n*s]
##                                                   produces
##   bias_act:  z in `layout`, b[F], y in "nfs". y may be z itself when layout == "nfs".
##   act_bwd:   y (the activation's OUTPUT) and dy in "nfs", dz in `layout`. dz may be dy itself
##              when layout == "nfs".
##   bias_grad: dz in `layout`, db[F].
## Context: n, f, s (compile-time shape), layout, act ("none" | "relu" | "sigmoid"), bias (0/1:
## bias_act without a bias takes no b argument), accumulate (bias_grad: db += sum instead of =).
##
## bias_act / act_bwd: EltwiseParams (hetcl/codegen/eltwise.py). 1-D NDRange over the output,
## global = ceil(n*f*s / (WGS*WPT*VW)) * WGS, local = WGS.
##   WGS  work-items per work-group
##   WPT  vectors per work-item. Vector w of work-item l in group g starts at element
##        ((g*WPT + w)*WGS + l)*VW: neighbouring work-items touch neighbouring vectors, which
##        coalesces on GPUs and is the direction PoCL vectorises a work-group along on CPUs.
##   VW   vector width (float, float2 .. float16) of loads, arithmetic and stores. A vector whose
##        lanes are contiguous in the other layout too (same layout, or s % VW == 0, or - checked
##        per vector - its lanes lie in one run of s) is one vector load; otherwise lane by
##        lane. The vector that runs past the end of the array is done lane by lane with bounds
##        checks, so any n, f, s works.
## Vector loads / stores are LOADV / STOREV: vloadN / vstoreN on GPUs; on devices without
## features["simt"] VW scalar accesses off one pointer (PoCL's vloadN, vstoreN and select are
## out-of-line calls there; LLVM merges the scalars into vector accesses), and ternaries for
## select. (PoCL, 2 cores, LeNet-5 "fns" relu: 256x16x100 bias_act 0.89 -> 0.15 ms, act_bwd
## 0.81 -> 0.2 ms; 256x6x784 0.41 -> 0.34, 0.49 -> 0.39 ms.)
##
## bias_grad: BiasGradParams (WGS, FPG, VW, BLOCKED).
## NDRange global = (ceil(F/FPG)*FPG, WGS), local = (FPG, WGS).
##   FPG  features per work-group (dimension 0). For s == 1 in "nfs" (a dense layer's [N, F])
##        neighbouring work-items then read neighbouring addresses (coalesced on GPUs).
##   WGS  work-items per feature (power of two). Each sums its share of the n*s elements with a
##        compensated (Kahan) sum, adds its VW lanes pairwise, then a fixed-order tree in local
##        memory adds the WGS partials: no atomics, the same bits on every run, accurate for
##        millions of elements.
##   VW   elements per step of a work-item, a floatVW with VW independent Kahan lanes (the lanes
##        hide the latency of the compensated sum's dependency chain; a CPU vectorises them).
##        A unit of VW elements is one vload where it is contiguous ("fns", or s % VW == 0).
##   BLOCKED 1: work-item r sums one contiguous block of ceil(n*s/VW/WGS) units (CPU caches and
##           prefetchers like streams); 0: unit u goes to work-item u % WGS (GPU coalescing).
<%!
def vtype(vw):
    return "float" if vw == 1 else "float%d" % vw


def vec(vw, items):
    """A vector (or scalar) expression built from vw scalar expressions."""
    return items[0] if vw == 1 else "(float%d)(%s)" % (vw, ", ".join(items))


def vload(vw, ptr, index):
    return "%s[%s]" % (ptr, index) if vw == 1 else "LOADV(%s + (%s))" % (ptr, index)


def vstore(vw, value, ptr, index):
    if vw == 1:
        return "%s[%s] = %s;" % (ptr, index, value)
    return "STOREV(%s, %s + (%s));" % (value, ptr, index)


LANES = "0123456789abcdef"


def vector_macros(vw, simt):
    """LOADV(p) / STOREV(v, p): VW floats at p, any alignment. GPUs: vloadN / vstoreN. CPUs:
    PoCL's vloadN / vstoreN are out-of-line calls, so VW scalar accesses at constant offsets
    from one pointer instead (LLVM merges them into one vector load / store)."""
    if vw == 1:
        return ""
    if simt:
        return ("#define LOADV(p) vload%d(0, (p))\n#define STOREV(v, p) vstore%d((v), 0, (p))"
                % (vw, vw))
    load = "(float%d)(%s)" % (vw, ", ".join("(p)[%d]" % k for k in range(vw)))
    store = " ".join("(p)[%d] = _v.s%s;" % (k, LANES[k]) for k in range(vw))
    return ("#define LOADV(p) (%s)\n"
            "#define STOREV(v, p) do { const float%d _v = (v); %s } while (0)"
            % (load, vw, store))


def select_expr(a, b, c, simt):
    """c ? b : a per lane (OpenCL select(a, b, c)). PoCL's select is an out-of-line call on
    CPUs; the vector ternary is the same per-lane choice."""
    return "select(%s, %s, %s)" % (a, b, c) if simt else "((%s) ? (%s) : (%s))" % (c, b, a)


def act_body(act, t, simt):
    """Body of `t act(t x)`. Sigmoid in the stable form: exp only of -|x| (never overflows)."""
    if act == "none":
        return "return x;"
    if act == "relu":  # select keeps NaN (x < 0 is false for NaN), as max(x, 0) in numpy does
        return "return %s;" % select_expr("x", "(%s)(0.0f)" % t, "x < 0.0f", simt)
    if act == "sigmoid":
        return ("const %s e = exp(-fabs(x));\n"
                "    const %s r = 1.0f / (1.0f + e);\n"
                "    return %s;  /* x>=0: 1/(1+e^-x); x<0: e^x/(1+e^x) */"
                % (t, t, select_expr("e * r", "r", "x >= 0.0f", simt)))
    raise ValueError("unknown activation %r" % act)


def dact_body(act, t, simt):
    """Body of `t dact(t y, t dy)` = dy * act'(x) written with the activation's output y."""
    if act == "none":
        return "return dy;"
    if act == "relu":
        return "return %s;" % select_expr("(%s)(0.0f)" % t, "dy", "y > 0.0f", simt)
    if act == "sigmoid":
        return "return dy * y * (1.0f - y);"
    raise ValueError("unknown activation %r" % act)
%>
<%def name="act_functions(vw)">
## The scalar form serves the bounds-checked tail, the vector form the body.
<% simt = features.get("simt", True) %>\
${vector_macros(vw, simt)}
inline float act1(float x) {
    ${act_body(act, "float", simt)}
}
inline float dact1(float y, float dy) {
    ${dact_body(act, "float", simt)}
}
% if vw > 1:
inline ${vtype(vw)} actv(${vtype(vw)} x) {
    ${act_body(act, vtype(vw), simt)}
}
inline ${vtype(vw)} dactv(${vtype(vw)} y, ${vtype(vw)} dy) {
    ${dact_body(act, vtype(vw), simt)}
}
% endif
</%def>
<%def name="shape_defines()">
#define N ${n}
#define F ${f}
#define S ${s}
#define TOTAL ${n * f * s}
</%def>
<%def name="bias_act()">
<%
VT = vtype(VW)
# The VW lanes of an aligned vector lie in one (nn, ff) run of s elements when s % VW == 0:
# then they share one bias and are contiguous in "fns" too.
one_run = (s % VW == 0)
src_contig = layout == "nfs" or one_run
%>
${shape_defines()}
${act_functions(VW)}
// Element of z that holds output element i (i indexes y, "nfs").
inline int src_index(const int i) {
% if layout == "nfs":
    return i;
% else:
    const int nn = i / (F * S), ff = (i / S) % F, ss = i % S;
    return (ff * N + nn) * S + ss;
% endif
}

// Not restrict: y may be z (in place, "nfs").
__kernel __attribute__((reqd_work_group_size(${WGS}, 1, 1)))
void bias_act(__global const float* z, ${"__global const float* restrict b, " if bias else ""}__global float* y)
{
    const int l = get_local_id(0), g = get_group_id(0);
% for w in range(WPT):
    {
        const int i = ((g * ${WPT} + ${w}) * ${WGS} + l) * ${VW};
        if (i + ${VW} <= TOTAL) {
%  if src_contig:
            ${VT} x = ${vload(VW, "z", "src_index(i)")};
%   if bias:
%    if one_run:
            x += b[(i / S) % F];
%    else:
            x += ${vec(VW, ["b[((i + %d) / S) %% F]" % v for v in range(VW)])};
%    endif
%   endif
%  else:
            ${VT} x;
            if (i % S + ${VW} <= S) {   // the lanes lie in one run: contiguous in z, one bias
                x = ${vload(VW, "z", "src_index(i)")}${" + b[(i / S) % F]" if bias else ""};
            } else {
                x = ${vec(VW, ["z[src_index(i + %d)]" % v for v in range(VW)])};
%   if bias:
                x += ${vec(VW, ["b[((i + %d) / S) %% F]" % v for v in range(VW)])};
%   endif
            }
%  endif
            ${vstore(VW, "act1(x)" if VW == 1 else "actv(x)", "y", "i")}
        } else {
            for (int v = 0; v < ${VW}; ++v) {
                if (i + v < TOTAL) {
                    const float x = z[src_index(i + v)]${" + b[((i + v) / S) % F]" if bias else ""};
                    y[i + v] = act1(x);
                }
            }
        }
    }
% endfor
}
</%def>
<%def name="act_bwd()">
<%
VT = vtype(VW)
src_contig = layout == "nfs" or s % VW == 0
%>
${shape_defines()}
${act_functions(VW)}
// Element of y and dy ("nfs") that output element i (i indexes dz, in `layout`) comes from.
inline int src_index(const int i) {
% if layout == "nfs":
    return i;
% else:
    const int ff = i / (N * S), nn = (i / S) % N, ss = i % S;
    return (nn * F + ff) * S + ss;
% endif
}

// Not restrict: dz may be dy (in place, "nfs").
__kernel __attribute__((reqd_work_group_size(${WGS}, 1, 1)))
void act_bwd(__global const float* y, __global const float* dy, __global float* dz)
{
    const int l = get_local_id(0), g = get_group_id(0);
% for w in range(WPT):
    {
        const int i = ((g * ${WPT} + ${w}) * ${WGS} + l) * ${VW};
        if (i + ${VW} <= TOTAL) {
%  if src_contig:
            const ${VT} yv = ${vload(VW, "y", "src_index(i)")};
            const ${VT} dyv = ${vload(VW, "dy", "src_index(i)")};
%  else:
            ${VT} yv, dyv;
            if (i % S + ${VW} <= S) {   // the lanes lie in one run: contiguous in y and dy
                yv = ${vload(VW, "y", "src_index(i)")};
                dyv = ${vload(VW, "dy", "src_index(i)")};
            } else {
                yv = ${vec(VW, ["y[src_index(i + %d)]" % v for v in range(VW)])};
                dyv = ${vec(VW, ["dy[src_index(i + %d)]" % v for v in range(VW)])};
            }
%  endif
            ${vstore(VW, "dact1(yv, dyv)" if VW == 1 else "dactv(yv, dyv)", "dz", "i")}
        } else {
            for (int v = 0; v < ${VW}; ++v) {
                if (i + v < TOTAL) {
                    const int k = src_index(i + v);
                    dz[i + v] = dact1(y[k], dy[k]);
                }
            }
        }
    }
% endfor
}
</%def>
<%def name="bias_grad()">
<%
VT = vtype(VW)
# Units of VW consecutive elements j of one feature; contiguous in memory in "fns", and in
# "nfs" when the unit cannot straddle two runs of s (s % VW == 0).
contig = layout == "fns" or s % VW == 0
units = -(-(n * s) // VW)
full_units = (n * s) // VW
%>
${shape_defines()}
#define NS (N * S)
#define WGS ${WGS}
#define FPG ${FPG}

// Element j (0 <= j < n*s, in (nn, ss) order) of feature ff.
inline int dz_index(const int ff, const int j) {
% if layout == "fns":
    return ff * NS + j;
% elif s == 1:
    return j * F + ff;
% else:
    return ((j / S) * F + ff) * S + j % S;
% endif
}

__kernel __attribute__((reqd_work_group_size(FPG, WGS, 1)))
void bias_grad(__global const float* restrict dz, __global float* restrict db)
{
    __local float part[WGS * FPG];  // part[r*FPG + fl]: partial sum of work-item r, feature fl
    const int fl = get_local_id(0), r = get_local_id(1);
    const int ff = get_group_id(0) * FPG + fl;
    // Kahan summation, VW independent lanes: comp carries the low bits that sum lost.
    ${VT} sum = 0.0f, comp = 0.0f;
    if (ff < F) {
% if BLOCKED:
        const int chunk = (${units} + WGS - 1) / WGS;
        const int end = min(${units}, (r + 1) * chunk);
        for (int u = r * chunk; u < end; ++u) {
% else:
        for (int u = r; u < ${units}; u += WGS) {
% endif
            const int j = u * ${VW};
            ${VT} x;
% if VW == 1:
            x = dz[dz_index(ff, j)];
% else:
            if (u < ${full_units}) {
%  if contig:
                x = vload${VW}(0, dz + dz_index(ff, j));
%  else:
                x = ${vec(VW, ["dz[dz_index(ff, j + %d)]" % v for v in range(VW)])};
%  endif
            } else {  // the last, partial unit: missing elements count as 0
                x = ${vec(VW, ["(j + %d < NS ? dz[dz_index(ff, j + %d)] : 0.0f)" % (v, v) for v in range(VW)])};
            }
% endif
            x -= comp;
            const ${VT} t = sum + x;
            comp = (t - sum) - x;
            sum = t;
        }
    }
<%
## Lanes added pairwise as .lo + .hi would (lane i with lane i + w, halving), written with scalar
## lane reads: memory checkers (Oclgrind) mistake the undefined operand of a .lo/.hi shuffle for
## an uninitialised value.
lanes = ["sum"] if VW == 1 else ["sum.s%x" % v for v in range(VW)]
while len(lanes) > 1:
    half = len(lanes) // 2
    lanes = ["(%s + %s)" % (lanes[i], lanes[i + half]) for i in range(half)]
%>
    part[r * FPG + fl] = ${lanes[0]};
    barrier(CLK_LOCAL_MEM_FENCE);
% for h in [WGS >> k for k in range(1, WGS.bit_length())]:
    if (r < ${h}) part[r * FPG + fl] += part[(r + ${h}) * FPG + fl];
    barrier(CLK_LOCAL_MEM_FENCE);
% endfor
    if (r == 0 && ff < F)
        db[ff] = ${"db[ff] + " if accumulate else ""}part[fl];
}
</%def>
% if kernel == "bias_act":
${bias_act()}
% elif kernel == "act_bwd":
${act_bwd()}
% elif kernel == "bias_grad":
${bias_grad()}
% endif
