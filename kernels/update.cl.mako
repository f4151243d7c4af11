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
## One kernel per render, chosen by the context name `kernel`.
##
## Memory layout: p, g, v, x, y are packed float32 arrays of `size` elements (compile-time).
## lr, momentum, weight_decay, a and b are run-time kernel arguments: a schedule changes them
## without a rebuild. nesterov is compile-time (context).
##
## Tunables (UpdateParams in hetcl/codegen/update.py, the same as eltwise's EltwiseParams).
## 1-D NDRange, global = ceil(size / (WGS*WPT*VW)) * WGS, local = WGS.
##   WGS  work-items per work-group
##   WPT  vectors per work-item; vector w of work-item l in group g starts at element
##        ((g*WPT + w)*WGS + l)*VW (neighbouring work-items, neighbouring vectors: coalesced)
##   VW   vector width (float .. float16) of loads, arithmetic and stores; the vector that runs
##        past the end is done lane by lane with bounds checks, so any size works.
## nesterov is read inside a def so that axpby renders without it (strict_undefined resolves a
## def's names only when it is called).
<%def name="use_nesterov()"><% return bool(nesterov) %></%def>
<%
VT = "float" if VW == 1 else "float%d" % VW

def vector_io(vw):
    """(load, store) code generators for VW-wide vectors at element i, or scalars."""
    if vw == 1:
        return (lambda ptr: "%s[i]" % ptr), (lambda val, ptr: "%s[i] = %s;" % (ptr, val))
    return ((lambda ptr: "vload%d(0, %s + i)" % (vw, ptr)),
            (lambda val, ptr: "vstore%d(%s, 0, %s + i);" % (vw, val, ptr)))

def sgd_body(t, vw):
    ld, st = vector_io(vw)
    step = "d + momentum * vv" if use_nesterov() else "vv"
    return [
        "const %s pv = %s;" % (t, ld("p")),
        "const %s d = %s + weight_decay * pv;" % (t, ld("g")),
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

body = {"sgd": sgd_body, "axpby": axpby_body, "sgd_multi": sgd_body}[kernel]
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
## sgd_multi reads `sizes`, the others `size`: each in its own def (names resolve when called).
% if kernel == "sgd_multi":
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
void sgd_multi(${", ".join("__global float* restrict p%d, __global const float* restrict g%d, __global float* restrict v%d" % (t, t, t) for t in range(len(sizes)))},
               const float lr, const float momentum, const float weight_decay)
{
    const int lid = get_local_id(0), grp = get_group_id(0);
%  for t, n in enumerate(sizes):
    ${"if" if t == 0 else "else if"} (grp < ${first[t + 1]}) {  // tensor ${t}: ${n} floats
        __global float* restrict p = p${t};
        __global const float* restrict g = g${t};
        __global float* restrict v = v${t};
${elements(n, "(grp - %d)" % first[t])}
    }
%  endfor
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
