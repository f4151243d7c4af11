## batchnorm.cl.mako - batch normalisation (BatchNorm2D over NCHW, BatchNorm1D over [n, C]) with
## an optional activation fused after it, training and evaluation, forward and backward:
##   bn_sums       totals = (sum x, sum x*x) per channel      forward statistics of this device's
##                                                            rows (finalize=1: + bn_finalize)
##   bn_finalize   saved, coef, running stats per channel     from the totals of the whole batch
##   bn_apply      y = act(x*coef[c] + coef[C + c])           forward, element-wise
##   bn_eval_coef  coef from the running statistics           evaluation mode (then bn_apply)
##   bn_bwd_sums   totals = (sum dz, sum dz*xhat); dbeta,     backward statistics and the
##                 dgamma = the same sums                     parameter gradients
##   bn_bwd_dx     dx = coef[c]*(dz - (totals[c] + xhat*totals[C + c]) / M)
## with dz = dy * act'(y) (y the activation's OUTPUT: relu dy*(y > 0), sigmoid dy*y*(1 - y);
## dz = dy for act "none") and xhat = (x - mean)*invstd. One kernel per render, chosen by the
## context name `kernel`; each lives in its own <%def> so that it needs only its own names.
##
## Memory layout (float32, packed; element offsets; n = batch rows on this device, C channels,
## S = H*W, 1 for BatchNorm1D):
##   x, y, dy, dx  "nfs": X[nn][cc][ss] at X[(nn*C + cc)*S + ss]. y (bn_apply) is not x.
##   totals        [2][C]: bn_sums (sum x, sum x*x), bn_bwd_sums (sum dz, sum dz*xhat), over
##                 this device's rows; the host adds the totals of several devices.
##   saved         [2][C]: mean at [cc], invstd = rsqrt(var + eps) at [C + cc] (biased var).
##   coef          [2][C]: scale = gamma*invstd at [cc], shift = beta - mean*scale at [C + cc]
##                 (bn_eval_coef: from running_mean, running_var).
##   gamma, beta, running_mean, running_var, dgamma, dbeta: [C]. bn_finalize updates the running
##                 statistics in place, PyTorch's way: r = (1 - momentum)*r + momentum*v with the
##                 unbiased variance var*M/(M - 1) for running_var.
##   count         runtime float M: the values per channel in the WHOLE batch (several devices'
##                 rows: not n*S); M > 1.
## Context: n, c, s (compile-time shape), act ("none" | "relu" | "sigmoid"), eps, momentum
## (float), finalize (bn_sums, 0/1; eps and momentum only with 1). Indices are 32-bit ints: the
## host rejects n*C*S near 2^31.
##
## bn_sums, bn_bwd_sums: BatchNormSumsParams (WGS, FPG, VW, BLOCKED), BiasGradParams' design
## (eltwise.cl.mako's bias_grad). NDRange global = (ceil(C/FPG)*FPG, WGS), local = (FPG, WGS).
##   FPG  channels per work-group (dimension 0): for S == 1 neighbouring work-items read
##        neighbouring addresses (coalesced on GPUs).
##   WGS  work-items per channel (power of two). Each sums its share of the n*S values with
##        compensated (Kahan) sums, adds its VW lanes pairwise, then a fixed-order tree in local
##        memory adds the WGS partials: no atomics, the same bits on every run.
##   VW   values per step of a work-item: VW independent Kahan lanes (they hide the latency of
##        the compensated sum's dependency chain; a CPU vectorises them). A unit of VW values is
##        one vector load where S % VW == 0, else gathered lane by lane (the last, partial unit
##        of n*S counts its missing values as 0).
##   BLOCKED 1: work-item r sums one contiguous block of ceil(n*S/VW/WGS) units (CPU caches and
##           prefetchers like streams); 0: unit u goes to work-item u % WGS (GPU coalescing).
## With finalize=1 the work-item r == 0 of each channel then does bn_finalize's work for it.
##
## bn_apply, bn_bwd_dx: BatchNormParams (WGS, WPT, VW), EltwiseParams' design (eltwise.cl.mako's
## bias_act). 1-D NDRange over the n*C*S outputs, global = ceil(n*C*S / (WGS*WPT*VW)) * WGS,
## local = WGS; vector w of work-item l in group g starts at element ((g*WPT + w)*WGS + l)*VW.
## A vector whose lanes lie in one run of S (always when S % VW == 0; else checked per vector)
## takes its channel's coefficients once; one that straddles two channels gathers them per
## lane. The vector past the end is done lane by lane with bounds checks.
##
## bn_finalize, bn_eval_coef: BatchNormCoefParams, WG = 64 work-items per group, one per channel
## (C values: not worth tuning).
##
## The activations (act1/actv, dact1/dactv) and vector accesses (LOADV/STOREV: vloadN/vstoreN on
## GPUs, scalar accesses off one pointer on devices without features["simt"]) are eltwise.cl.mako's,
## imported as the namespace `ew`: one definition of each activation for every kernel that fuses it.
<%namespace name="ew" file="eltwise.cl.mako"/>
<%!
def flit(value):
    """A float32 literal (repr is exact and always has a '.' or an exponent)."""
    return repr(float(value)) + "f"


def lane_sum(vw, name):
    """The VW lanes of `name` added pairwise (lane i with lane i + w, halving), written with
    scalar lane reads as eltwise.cl.mako's bias_grad does (Oclgrind and .lo/.hi shuffles)."""
    lanes = [name] if vw == 1 else ["%s.s%x" % (name, v) for v in range(vw)]
    while len(lanes) > 1:
        half = len(lanes) // 2
        lanes = ["(%s + %s)" % (lanes[i], lanes[i + half]) for i in range(half)]
    return lanes[0]


FINALIZE_ARGS = ("__global const float* restrict gamma, __global const float* restrict beta, "
                 "__global float* restrict running_mean, __global float* restrict running_var, "
                 "__global float* restrict saved, __global float* restrict coef")
%>
<%def name="shape_defines()">
#define N ${n}
#define C ${c}
#define S ${s}
#define NS (N * S)
#define TOTAL ${n * c * s}
</%def>
<%def name="finalize_function()">
// bn_finalize's work for channel cc from its totals t0 = sum x, t1 = sum x*x over M values.
inline void finalize_channel(const int cc, const float t0, const float t1, const float m,
                             __global const float* restrict gamma,
                             __global const float* restrict beta,
                             __global float* restrict running_mean,
                             __global float* restrict running_var,
                             __global float* restrict saved, __global float* restrict coef)
{
    const float mean = t0 / m;
    const float var = max(t1 / m - mean * mean, 0.0f);
    const float invstd = rsqrt(var + ${flit(eps)});
    const float scale = gamma[cc] * invstd;
    saved[cc] = mean;
    saved[${c} + cc] = invstd;
    coef[cc] = scale;
    coef[${c} + cc] = beta[cc] - mean * scale;
    running_mean[cc] = ${flit(1 - momentum)} * running_mean[cc] + ${flit(momentum)} * mean;
    running_var[cc] = ${flit(1 - momentum)} * running_var[cc]
                      + ${flit(momentum)} * (var * (m / (m - 1.0f)));
}
</%def>
## ---- the reductions ------------------------------------------------------------------------
<%def name="reduction_prelude()">
${shape_defines()}
#define WGS ${WGS}
#define FPG ${FPG}
#define UNITS ${-(-(n * s) // VW)}
#define FULL_UNITS ${(n * s) // VW}
#define VT ${"float" if VW == 1 else "float%d" % VW}
// Value j (0 <= j < n*S, in (nn, ss) order) of channel cc.
inline int x_index(const int cc, const int j) {
% if s == 1:
    return j * C + cc;
% else:
    return ((j / S) * C + cc) * S + j % S;
% endif
}
</%def>
<%def name="load_unit(var, ptr)">\
## The unit of VW values of channel cc starting at value j into `var` (declared before).
% if VW == 1:
            ${var} = ${ptr}[x_index(cc, j)];
% elif s % VW == 0:
            ${var} = LOADV(${ptr} + x_index(cc, j));
% else:
            if (u < FULL_UNITS)
                ${var} = (float${VW})(${", ".join("%s[x_index(cc, j + %d)]" % (ptr, v) for v in range(VW))});
            else  // the last, partial unit: missing values count as 0
                ${var} = (float${VW})(${", ".join("(j + %d < NS ? %s[x_index(cc, j + %d)] : 0.0f)" % (v, ptr, v) for v in range(VW))});
% endif
</%def>
<%def name="unit_loop()">\
## Work-item r's units of its channel (BLOCKED: one contiguous block; else interleaved).
% if BLOCKED:
        const int chunk = (UNITS + WGS - 1) / WGS;
        const int end = min(UNITS, (r + 1) * chunk);
        for (int u = r * chunk; u < end; ++u) {
% else:
        for (int u = r; u < UNITS; u += WGS) {
% endif
            const int j = u * ${VW};
</%def>
<%def name="kahan(sum, comp, value)">\
            {   // Kahan: ${comp} carries the low bits that ${sum} lost
                const VT k_y = (${value}) - ${comp};
                const VT k_t = ${sum} + k_y;
                ${comp} = (k_t - ${sum}) - k_y;
                ${sum} = k_t;
            }
</%def>
<%def name="tree()">\
## Both partial sums of work-item r into part, then the fixed-order tree over r.
    part[r * FPG + cl] = ${lane_sum(VW, "sum0")};
    part[(WGS + r) * FPG + cl] = ${lane_sum(VW, "sum1")};
    barrier(CLK_LOCAL_MEM_FENCE);
% for h in [WGS >> k for k in range(1, WGS.bit_length())]:
    if (r < ${h}) {
        part[r * FPG + cl] += part[(r + ${h}) * FPG + cl];
        part[(WGS + r) * FPG + cl] += part[(WGS + r + ${h}) * FPG + cl];
    }
    barrier(CLK_LOCAL_MEM_FENCE);
% endfor
</%def>
<%def name="reduction_head()">\
    // part[r*FPG + cl]: first sum of work-item r for channel cl; part[(WGS + r)*FPG + cl]: second
    __local float part[2 * WGS * FPG];
    const int cl = get_local_id(0), r = get_local_id(1);
    const int cc = get_group_id(0) * FPG + cl;
    VT sum0 = 0.0f, comp0 = 0.0f, sum1 = 0.0f, comp1 = 0.0f;
</%def>
<%def name="bn_sums()">
${reduction_prelude()}
${ew.attr.vector_macros(VW, features.get("simt", True))}
% if finalize:
${finalize_function()}
% endif

__kernel __attribute__((reqd_work_group_size(FPG, WGS, 1)))
void bn_sums(__global const float* restrict x, __global float* restrict totals${", " + FINALIZE_ARGS + ", const float count" if finalize else ""})
{
${reduction_head()}
    if (cc < C) {
${unit_loop()}
            VT v;
${load_unit("v", "x")}
${kahan("sum0", "comp0", "v")}
${kahan("sum1", "comp1", "v * v")}
        }
        sum0 -= comp0;
        sum1 -= comp1;
    }
${tree()}
    if (r == 0 && cc < C) {
        const float t0 = part[cl], t1 = part[WGS * FPG + cl];
        totals[cc] = t0;
        totals[C + cc] = t1;
% if finalize:
        finalize_channel(cc, t0, t1, count, gamma, beta, running_mean, running_var, saved, coef);
% endif
    }
}
</%def>
<%def name="bn_bwd_sums()">
${reduction_prelude()}
${ew.act_functions(VW)}

// y is read only through dact (not at all for act "none").
__kernel __attribute__((reqd_work_group_size(FPG, WGS, 1)))
void bn_bwd_sums(__global const float* restrict x, __global const float* restrict y,
                 __global const float* restrict dy, __global const float* restrict saved,
                 __global float* restrict totals, __global float* restrict dgamma,
                 __global float* restrict dbeta)
{
${reduction_head()}
    // sum1 sums dz*(x - mean); times invstd once at the end it is sum dz*xhat
    if (cc < C) {
        const float mean = saved[cc];
${unit_loop()}
            VT xv, dyv;
${load_unit("xv", "x")}
${load_unit("dyv", "dy")}
% if act == "none":
            const VT dz = dyv;
% else:
            VT yv;
${load_unit("yv", "y")}
            const VT dz = ${"dact1" if VW == 1 else "dactv"}(yv, dyv);
% endif
${kahan("sum0", "comp0", "dz")}
${kahan("sum1", "comp1", "dz * (xv - mean)")}
        }
        sum0 -= comp0;
        sum1 -= comp1;
    }
${tree()}
    if (r == 0 && cc < C) {
        const float t0 = part[cl], t1 = part[WGS * FPG + cl] * saved[C + cc];
        totals[cc] = t0;
        totals[C + cc] = t1;
        dbeta[cc] = t0;
        dgamma[cc] = t1;
    }
}
</%def>
## ---- the element-wise kernels ----------------------------------------------------------------
<%def name="channel_values(names)">\
## Per-channel values for the vector at element i: names = [(variable, "array[{c}]")]. Lanes in
## one run of S take the channel's value once; a straddling vector gathers it per lane.
% for var, _ in names:
            VT ${var};
% endfor
% if VW > 1 and s % VW != 0:
            if (i % S + ${VW} <= S) {   // the lanes lie in one run of S: one channel
% else:
            {
% endif
                const int cc = (i / S) % C;
% for var, expr in names:
                ${var} = (VT)(${expr.format(c="cc")});
% endfor
            }
% if VW > 1 and s % VW != 0:
            else {
%  for var, expr in names:
                ${var} = (VT)(${", ".join(expr.format(c="(((i + %d) / S) %% C)" % v) for v in range(VW))});
%  endfor
            }
% endif
</%def>
<%def name="eltwise_loop(vector_body, lane_body)">\
    const int l = get_local_id(0), g = get_group_id(0);
% for w in range(WPT):
    {
        const int i = ((g * ${WPT} + ${w}) * ${WGS} + l) * ${VW};
        if (i + ${VW} <= TOTAL) {
${vector_body()}
        } else {
            for (int k = i; k < min(i + ${VW}, TOTAL); ++k) {
                const int cc = (k / S) % C;
${lane_body()}
            }
        }
    }
% endfor
</%def>
<%def name="bn_apply()">
${shape_defines()}
#define VT ${"float" if VW == 1 else "float%d" % VW}
${ew.act_functions(VW)}

__kernel __attribute__((reqd_work_group_size(${WGS}, 1, 1)))
void bn_apply(__global const float* restrict x, __global const float* restrict coef,
              __global float* restrict y)
{
<%def name="vector_body()">\
            const VT xv = ${ew.attr.vload(VW, "x", "i")};
${channel_values([("a", "coef[{c}]"), ("b", "coef[C + {c}]")])}
            ${ew.attr.vstore(VW, ("act1" if VW == 1 else "actv") + "(xv * a + b)", "y", "i")}
</%def>
<%def name="lane_body()">\
                y[k] = act1(x[k] * coef[cc] + coef[C + cc]);
</%def>
${eltwise_loop(vector_body, lane_body)}
}
</%def>
<%def name="bn_bwd_dx()">
${shape_defines()}
#define VT ${"float" if VW == 1 else "float%d" % VW}
${ew.act_functions(VW)}

// y is read only through dact (not at all for act "none").
__kernel __attribute__((reqd_work_group_size(${WGS}, 1, 1)))
void bn_bwd_dx(__global const float* restrict x, __global const float* restrict y,
               __global const float* restrict dy, __global const float* restrict saved,
               __global const float* restrict coef, __global const float* restrict totals,
               __global float* restrict dx, const float count)
{
    const float inv_m = 1.0f / count;
<%def name="vector_body()">\
            const VT xv = ${ew.attr.vload(VW, "x", "i")};
            const VT dyv = ${ew.attr.vload(VW, "dy", "i")};
% if act == "none":
            const VT dz = dyv;
% else:
            const VT dz = ${"dact1" if VW == 1 else "dactv"}(${ew.attr.vload(VW, "y", "i")}, dyv);
% endif
${channel_values([("mean", "saved[{c}]"), ("invstd", "saved[C + {c}]"), ("scale", "coef[{c}]"), ("t0", "totals[{c}]"), ("t1", "totals[C + {c}]")])}
            const VT xhat = (xv - mean) * invstd;
            ${ew.attr.vstore(VW, "scale * (dz - (t0 + xhat * t1) * inv_m)", "dx", "i")}
</%def>
<%def name="lane_body()">\
                const float dz = ${"dy[k]" if act == "none" else "dact1(y[k], dy[k])"};
                const float xhat = (x[k] - saved[cc]) * saved[C + cc];
                dx[k] = coef[cc] * (dz - (totals[cc] + xhat * totals[C + cc]) * inv_m);
</%def>
${eltwise_loop(vector_body, lane_body)}
}
</%def>
## ---- the per-channel kernels -----------------------------------------------------------------
<%def name="bn_finalize()">
${finalize_function()}

__kernel __attribute__((reqd_work_group_size(${WG}, 1, 1)))
void bn_finalize(__global const float* restrict totals, ${FINALIZE_ARGS}, const float count)
{
    const int cc = get_global_id(0);
    if (cc < ${c})
        finalize_channel(cc, totals[cc], totals[${c} + cc], count, gamma, beta, running_mean,
                         running_var, saved, coef);
}
</%def>
<%def name="bn_eval_coef()">
__kernel __attribute__((reqd_work_group_size(${WG}, 1, 1)))
void bn_eval_coef(__global const float* restrict gamma, __global const float* restrict beta,
                  __global const float* restrict running_mean,
                  __global const float* restrict running_var, __global float* restrict coef)
{
    const int cc = get_global_id(0);
    if (cc < ${c}) {
        const float scale = gamma[cc] * rsqrt(running_var[cc] + ${flit(eps)});
        coef[cc] = scale;
        coef[${c} + cc] = beta[cc] - running_mean[cc] * scale;
    }
}
</%def>
% if kernel == "bn_sums":
${bn_sums()}
% elif kernel == "bn_finalize":
${bn_finalize()}
% elif kernel == "bn_apply":
${bn_apply()}
% elif kernel == "bn_eval_coef":
${bn_eval_coef()}
% elif kernel == "bn_bwd_sums":
${bn_bwd_sums()}
% elif kernel == "bn_bwd_dx":
${bn_bwd_dx()}
% endif
