## update.cl.mako - parameter updates and gradient-shard arithmetic, element-wise over flat arrays:
##   sgd    PyTorch's SGD with momentum, Nesterov and weight decay, in place on p and v:
##            d = g + weight_decay*p;  v = momentum*v + d;  p -= lr * (d + momentum*v if nesterov else v)
##          momentum == 0 never reads v (v = d), so a fresh v need not be zeroed.
##   axpby  y = a*x + b*y (sum / scale gradient shards); b == 0 never reads y, which may hold NaN.
##   sgd_multi  sgd over several tensors in one launch (context sizes = their element counts):
##          arguments p0, g0, v0, p1, g1, v1, ..., then lr, momentum, weight_decay. Tensor t
##          gets its own run of work-groups (ceil(size_t / (WGS*WPT*VW)) of them, after those of
##          the tensors before it), so each group works on one tensor with sgd's code: the
##          same results, bit for bit, as one sgd launch per tensor, with one launch per step.
##   adam_multi  PyTorch's Adam (decoupled = 0) or AdamW (decoupled = 1, compile-time), over
##          several tensors like sgd_multi: arguments p0, g0, m0, v0, ..., then lr, beta1, beta2,
##          eps, weight_decay, step_size = lr / (1 - beta1^t), bc2_sqrt = sqrt(1 - beta2^t):
##            Adam:  g += weight_decay*p;   AdamW:  p *= 1 - lr*weight_decay
##            m += (1 - beta1) * (g - m);  v = beta2*v + (1 - beta2)*g*g
##            p -= step_size * m / (sqrt(v) / bc2_sqrt + eps)
##          (the order of PyTorch's own operations, so that results agree to rounding).
##   With clip = 1 (compile-time), both multi kernels take one more scalar last, gscale, and
##   update with g' = gscale * g, rounded before the update as PyTorch's clip_grad_norm_
##   leaves it (global gradient-norm clipping); clip = 0 reads g as it is.
##   sumsq_multi  the sum of squares of several tensors g0, g1, ... (context sizes), one partial
##          sum per work-group into partial[group] (groups laid out as in sgd_multi); the host
##          adds the partials. Needs WGS a power of two (the local reduction tree).
## One kernel per render, chosen by the context name `kernel`.
##
## Memory layout: p, g, v, x, y are packed float32 arrays of `size` elements (compile-time).
## p, g, v (and Adam's m) of one tensor are packed float32 arrays of the same size.
## lr, momentum, weight_decay, a and b (and Adam's scalars) are run-time kernel arguments: a
## schedule changes them without a rebuild. nesterov and decoupled are compile-time (context).
##
## Tunables (UpdateParams in hetcl/codegen/update.py, the same as eltwise's EltwiseParams).
## 1-D NDRange, global = ceil(size / (WGS*WPT*VW)) * WGS, local = WGS.
##   WGS  work-items per work-group
##   WPT  vectors per work-item; vector w of work-item l in group g starts at element
##        ((g*WPT + w)*WGS + l)*VW (neighbouring work-items, neighbouring vectors: coalesced)
##   VW   vector width (float .. float16) of loads, arithmetic and stores; the vector that runs
##        past the end is done lane by lane with bounds checks, so any size works.
## nesterov and decoupled are read inside defs so that the kernels without them render (strict_undefined
## resolves a def's names only when it is called).
<%def name="use_nesterov()"><% return bool(nesterov) %></%def>
<%def name="use_decoupled()"><% return bool(decoupled) %></%def>
<%def name="use_clip()"><% return bool(clip) %></%def>
<%
VT = "float" if VW == 1 else "float%d" % VW

def vector_io(vw):
    """(load, store) code generators for VW-wide vectors at element i, or scalars."""
    if vw == 1:
        return (lambda ptr: "%s[i]" % ptr), (lambda val, ptr: "%s[i] = %s;" % (ptr, val))
    return ((lambda ptr: "vload%d(0, %s + i)" % (vw, ptr)),
            (lambda val, ptr: "vstore%d(%s, 0, %s + i);" % (vw, val, ptr)))

def grad(t, ld):
    """The line that reads the gradient into gg: times gscale where clipping (a statement of
    its own, so that no contraction fuses the product into the update's sums)."""
    scaled = kernel in ("sgd_multi", "adam_multi") and use_clip()
    return "const %s gg = %s%s;" % (t, "gscale * " if scaled else "", ld("g"))

def sgd_body(t, vw):
    ld, st = vector_io(vw)
    step = "d + momentum * vv" if use_nesterov() else "vv"
    return [
        "const %s pv = %s;" % (t, ld("p")),
        grad(t, ld),
        "const %s d = gg + weight_decay * pv;" % t,
        "const %s vv = momentum != 0.0f ? momentum * %s + d : d;  // momentum 0: v unread" % (t, ld("v")),
        st("vv", "v"),
        st("pv - lr * (%s)" % step, "p"),
    ]

def axpby_body(t, vw):
    ld, st = vector_io(vw)
    return [
        "%s out = a * %s;" % (t, ld("x")),
        "if (b != 0.0f) out += b * %s;  // b == 0: y is never read (may be NaN)" % ld("y"),
        st("out", "y"),
    ]

def adam_body(t, vw):
    ld, st = vector_io(vw)
    lines = ["%s pv = %s;" % (t, ld("p")), grad(t, ld), "%s gv = gg;" % t]
    if use_decoupled():
        lines.append("pv = pv * (1.0f - lr * weight_decay);")
    else:
        lines.append("gv = gv + weight_decay * pv;")
    return lines + [
        "const %s mv = %s + (1.0f - beta1) * (gv - %s);" % (t, ld("m"), ld("m")),
        "const %s vv = beta2 * %s + (1.0f - beta2) * gv * gv;" % (t, ld("v")),
        st("mv", "m"),
        st("vv", "v"),
        st("pv - step_size * mv / (sqrt(vv) / bc2_sqrt + eps)", "p"),
    ]

body = {"sgd": sgd_body, "axpby": axpby_body, "sgd_multi": sgd_body,
        "adam_multi": adam_body, "sumsq_multi": None}[kernel]
# the buffers of one tensor in a multi-tensor kernel: (name, written)
TENSOR = {"sgd_multi": (("p", 1), ("g", 0), ("v", 1)),
          "adam_multi": (("p", 1), ("g", 0), ("m", 1), ("v", 1))}.get(kernel)
SCALARS = {"sgd_multi": ("lr", "momentum", "weight_decay"),
           "adam_multi": ("lr", "beta1", "beta2", "eps", "weight_decay", "step_size",
                          "bc2_sqrt")}.get(kernel)
if SCALARS and use_clip():
    SCALARS += ("gscale",)
%>
<%def name="elements(SIZE, grp)">
% for w in range(WPT):
    {
        const int i0 = ((${grp} * ${WPT} + ${w}) * ${WGS} + lid) * ${VW};
        if (i0 + ${VW} <= ${SIZE}) {
            const int i = i0;
%  for line in body(VT, VW):
            ${line}
%  endfor
        } else {
            for (int i = i0; i < min(i0 + ${VW}, ${SIZE}); ++i) {
%  for line in body("float", 1):
                ${line}
%  endfor
            }
        }
    }
% endfor
</%def>
## the multi kernels read `sizes`, the others `size`: each in its own def (names resolve when
## called).
% if kernel == "sumsq_multi":
${sumsq_kernel()}
% elif TENSOR:
${multi_kernel()}
% else:
${single_kernel()}
% endif
<%def name="multi_kernel()">
<%
per_group = WGS * WPT * VW
first = [0]
for n in sizes:
    first.append(first[-1] + -(-n // per_group))
%>
__kernel __attribute__((reqd_work_group_size(${WGS}, 1, 1)))
void ${kernel}(${", ".join("__global %sfloat* restrict %s%d" % ("" if written else "const ", name, t) for t in range(len(sizes)) for name, written in TENSOR)},
               ${", ".join("const float " + name for name in SCALARS)})
{
    const int lid = get_local_id(0), grp = get_group_id(0);
%  for t, n in enumerate(sizes):
    ${"if" if t == 0 else "else if"} (grp < ${first[t + 1]}) {  // tensor ${t}: ${n} floats
%   for name, written in TENSOR:
        __global ${"" if written else "const "}float* restrict ${name} = ${name}${t};
%   endfor
${elements(n, "(grp - %d)" % first[t])}
    }
%  endfor
}
</%def>
<%def name="sumsq_kernel()">
<%
per_group = WGS * WPT * VW
first = [0]
for n in sizes:
    first.append(first[-1] + -(-n // per_group))
%>
__kernel __attribute__((reqd_work_group_size(${WGS}, 1, 1)))
void sumsq_multi(${", ".join("__global const float* restrict g%d" % t for t in range(len(sizes)))},
                 __global float* restrict partial)
{
    __local float part[${WGS}];
    const int lid = get_local_id(0), grp = get_group_id(0);
    float acc = 0.0f;
%  for t, n in enumerate(sizes):
    ${"if" if t == 0 else "else if"} (grp < ${first[t + 1]}) {  // tensor ${t}: ${n} floats
        const int i0 = ((grp - ${first[t]}) * ${WPT} * ${WGS} + lid) * ${VW};
        for (int w = 0; w < ${WPT}; ++w)
            for (int j = 0; j < ${VW}; ++j) {
                const int i = i0 + w * ${WGS * VW} + j;
                if (i < ${n})
                    acc += g${t}[i] * g${t}[i];
            }
    }
%  endfor
    part[lid] = acc;
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int width = ${WGS} / 2; width > 0; width /= 2) {  // ("half" is a type in OpenCL C)
        if (lid < width)
            part[lid] += part[lid + width];
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    if (lid == 0)
        partial[grp] = part[0];
}
</%def>
<%def name="single_kernel()">
#define SIZE ${size}

% if kernel == "sgd":
__kernel __attribute__((reqd_work_group_size(${WGS}, 1, 1)))
void sgd(__global float* restrict p, __global const float* restrict g, __global float* restrict v,
         const float lr, const float momentum, const float weight_decay)
% else:
// Not restrict: x may be y (y = (a + b) * y).
__kernel __attribute__((reqd_work_group_size(${WGS}, 1, 1)))
void axpby(__global const float* x, __global float* y, const float a, const float b)
% endif
{
    const int lid = get_local_id(0), grp = get_group_id(0);
${elements("SIZE", "grp")}
}
</%def>
