## pool.cl.mako - max pooling, forward and backward, without padding.
##
## Rendered once per layer shape; ``kernel`` picks which kernel this program holds ("maxpool_fwd"
## or "maxpool_bwd"), so a layer compiles only what it launches.
##
## Shapes (compile-time constants, lower case in the context, so index math folds):
##   images, c, h, w   input batch, channels, height, width
##   kh, kw            window height, width;   sh, sw  strides (sh < kh: overlapping windows)
##   OH = (h - kh)//sh + 1,  OW = (w - kw)//sw + 1   (windows lie wholly inside the image)
##
## Memory layout (element offsets, row-major, every array packed):
##   x, dx   float32 [images, c, h, w];  plane P = n*c + ch starts at P*h*w
##   y, dy   float32 [images, c, OH, OW]; plane P starts at P*OH*OW
##   argmax  int32   [images, c, OH, OW]: the flat index iy*w + ix inside plane P of the maximum
##           of window (oy, ox); ties go to the first maximum in row-major order of the window.
##
## Two work decompositions, chosen by PLANES:
## PLANES = 0 (GPUs): one work-item per item (consecutive work-items on consecutive items).
##   maxpool_fwd: item = output element; it scans its window in row-major order (unrolled up to
##   25 taps).
##   maxpool_bwd: a gather: item = input pixel; it visits the windows that contain the pixel in
##   row-major order (ceil(kh/sh)*ceil(kw/sw) candidates, unrolled up to 25; bigger overlaps
##   loop over the exact window range) and adds dy where the window's argmax is the pixel; it
##   overwrites dx (0 where no window chose the pixel).
##   NDRange: global = (ceil(items / (WG*WPT)) * WG), local = (WG); items = images*c*OH*OW
##   (fwd) or images*c*h*w (bwd).
## PLANES = 1 (CPUs): one work-item per (image, channel) plane P.
##   maxpool_fwd: loops over (oy, ox), the window unrolled with ternaries (no branches), so that
##   LLVM vectorises the loop over ox.
##   maxpool_bwd: zeroes the dx plane, then scatters dx[argmax[o]] += dy[o] over the outputs o
##   in row-major order: every pixel sums its windows in the same order as the gather, so both
##   forms give the same bits. (PoCL, 2 cores, 256x6x28x28 2x2/2: bwd 0.8 -> 0.15 ms, fwd
##   0.27 -> 0.16 ms.)
##   NDRange: global = (ceil(images*c / (WG*WPT)) * WG), local = (WG).
## In both, work-item t of group g owns items (planes) g*WG*WPT + t + k*WG (k < WPT): strided
##   by WG so a work-group touches WG consecutive items at each step k. No atomics,
##   deterministic, overlapping windows just work.
##
## Tunables (hetcl/codegen/pool.py: PoolParams, which also checks them):
##   WG      work-items per work-group
##   WPT     items (outputs for fwd, input pixels for bwd; planes with PLANES = 1) per work-item
##   PLANES  0: per-element work-items; 1: per-plane work-items (see above). With PLANES = 1 on
##           devices without features["simt"], the kernel asks for min_vector_width(512).
##
## Index math: element offsets are size_t (images*c*h*w can pass 2^31); in-plane ones are int.
<%
OH = (h - kh) // sh + 1
OW = (w - kw) // sw + 1
OHW = OH * OW
HW = h * w
UNROLL_MAX = 25        # larger windows (global pooling) loop: unrolling them only slows the build
NY = -(-kh // sh)      # windows along y that can contain a pixel
NX = -(-kw // sw)

def cond(o, t, limit, r, stride, k):
    """C test that candidate window o = q - t exists and contains the pixel (tap r + t*stride)."""
    terms = ["%s < %d" % (o, limit)]
    if t > 0:
        terms.append("%s >= 0" % o)
    if (stride - 1) + t * stride >= k:   # the tap can fall outside the window
        terms.append("%s + %d < %d" % (r, t * stride, k))
    return " && ".join(terms)
%>
#define WG ${WG}

<%def name="plane_head()">\
## Kernel head of the PLANES = 1 kernels.
% if features.get("simt", True):
__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
% else:
__kernel __attribute__((reqd_work_group_size(WG, 1, 1))) __attribute__((min_vector_width(512)))
% endif
</%def>
% if kernel == "maxpool_fwd" and PLANES:
${plane_head()}
void maxpool_fwd(__global const float* restrict x, __global float* restrict y,
                 __global int* restrict argmax)
{
    const int t0 = get_group_id(0) * (WG * ${WPT}) + get_local_id(0);
    for (int k = 0; k < ${WPT}; ++k) {
        const int plane = t0 + k * WG;
        if (plane >= ${images * c})
            break;
        __global const float* src = x + (size_t)plane * ${HW};
        __global float* dst = y + (size_t)plane * ${OHW};
        __global int* arg = argmax + (size_t)plane * ${OHW};
        for (int oy = 0; oy < ${OH}; ++oy) {
            __global const float* row = src + oy * ${sh * w};
            for (int ox = 0; ox < ${OW}; ++ox) {
                // Strict '>' in row-major order keeps the first of equal maxima; ternaries,
                // not branches, so that LLVM vectorises the loop over ox.
                float best = row[ox * ${sw}];
                int a = 0;
% if kh * kw <= UNROLL_MAX:
%  for i in range(kh):
%   for j in range(kw):
%    if i or j:
                {
                    const float v = row[ox * ${sw} + ${i * w + j}];
                    a = v > best ? ${i * w + j} : a;
                    best = v > best ? v : best;
                }
%    endif
%   endfor
%  endfor
% else:
                for (int i = 0; i < ${kh}; ++i)
                    for (int j = 0; j < ${kw}; ++j) {
                        const float v = row[ox * ${sw} + i * ${w} + j];
                        a = v > best ? i * ${w} + j : a;
                        best = v > best ? v : best;
                    }
% endif
                dst[oy * ${OW} + ox] = best;
                arg[oy * ${OW} + ox] = oy * ${sh * w} + ox * ${sw} + a;
            }
        }
    }
}

% elif kernel == "maxpool_bwd" and PLANES:
${plane_head()}
void maxpool_bwd(__global const float* restrict dy, __global const int* restrict argmax,
                 __global float* restrict dx)
{
    const int t0 = get_group_id(0) * (WG * ${WPT}) + get_local_id(0);
    for (int k = 0; k < ${WPT}; ++k) {
        const int plane = t0 + k * WG;
        if (plane >= ${images * c})
            break;
        __global float* d = dx + (size_t)plane * ${HW};
        __global const float* g = dy + (size_t)plane * ${OHW};
        __global const int* arg = argmax + (size_t)plane * ${OHW};
        for (int p = 0; p < ${HW}; ++p) d[p] = 0.0f;
        // Scatter in row-major window order: each pixel sums its windows' dy in the same order
        // as the gather form does.
        for (int o = 0; o < ${OHW}; ++o) d[arg[o]] += g[o];
    }
}

% elif kernel == "maxpool_fwd":
__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void maxpool_fwd(__global const float* restrict x, __global float* restrict y,
                 __global int* restrict argmax)
{
    const size_t e0 = get_group_id(0) * (size_t)(WG * ${WPT}) + get_local_id(0);
    for (int k = 0; k < ${WPT}; ++k) {
        const size_t e = e0 + k * WG;
        if (e >= ${images * c * OHW}UL)
            break;
        {
            const size_t plane = e / ${OHW};
            const int p = (int)(e - plane * ${OHW});
            const int top_left = (p / ${OW}) * ${sh * w} + (p % ${OW}) * ${sw};
            __global const float* src = x + plane * ${HW};
            // Strict '>' over the window in row-major order keeps the first of equal maxima.
            float best = src[top_left];
            int arg = top_left;
% if kh * kw <= UNROLL_MAX:
%  for i in range(kh):
%   for j in range(kw):
%    if i or j:
            {
                const float v = src[top_left + ${i * w + j}];
                if (v > best) { best = v; arg = top_left + ${i * w + j}; }
            }
%    endif
%   endfor
%  endfor
% else:
            for (int i = 0; i < ${kh}; ++i)
                for (int j = 0; j < ${kw}; ++j) {
                    const int idx = top_left + i * ${w} + j;
                    const float v = src[idx];
                    if (v > best) { best = v; arg = idx; }
                }
% endif
            y[e] = best;
            argmax[e] = arg;
        }
    }
}

% elif kernel == "maxpool_bwd":
__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void maxpool_bwd(__global const float* restrict dy, __global const int* restrict argmax,
                 __global float* restrict dx)
{
    const size_t e0 = get_group_id(0) * (size_t)(WG * ${WPT}) + get_local_id(0);
    for (int k = 0; k < ${WPT}; ++k) {
        const size_t e = e0 + k * WG;
        if (e >= ${images * c * HW}UL)
            break;
        {
            const size_t plane = e / ${HW};
            const int p = (int)(e - plane * ${HW});
            const int iy = p / ${w}, ix = p % ${w};
            const size_t base = plane * ${OHW};
            float sum = 0.0f;
% if NY * NX <= UNROLL_MAX:
            // Windows (oy, ox) containing (iy, ix): oy*sh <= iy < oy*sh + kh, oy in [0, OH).
            // Candidates are oy = iy/sh - t for t < ceil(kh/sh) (the tap is iy%sh + t*sh);
            // unrolled, highest t first so windows are visited in row-major order.
            const int qy = iy / ${sh}, ry = iy - qy * ${sh};
            const int qx = ix / ${sw}, rx = ix - qx * ${sw};
%  for ty in reversed(range(NY)):
            {
                const int oy = qy - ${ty};
                const bool vy = ${cond("oy", ty, OH, "ry", sh, kh)};
%   for tx in reversed(range(NX)):
                {
                    const int ox = qx - ${tx};
                    if (vy && ${cond("ox", tx, OW, "rx", sw, kw)}) {
                        const size_t o = base + oy * ${OW} + ox;
                        if (argmax[o] == p) sum += dy[o];
                    }
                }
%   endfor
            }
%  endfor
% else:
            // Windows (oy, ox) containing (iy, ix): oy*sh <= iy < oy*sh + kh, oy in [0, OH).
            const int oy_lo = iy >= ${kh} ? (iy - ${kh}) / ${sh} + 1 : 0;
            const int oy_hi = min(iy / ${sh}, ${OH - 1});
            const int ox_lo = ix >= ${kw} ? (ix - ${kw}) / ${sw} + 1 : 0;
            const int ox_hi = min(ix / ${sw}, ${OW - 1});
            for (int oy = oy_lo; oy <= oy_hi; ++oy)
                for (int ox = ox_lo; ox <= ox_hi; ++ox) {
                    const size_t o = base + oy * ${OW} + ox;
                    if (argmax[o] == p) sum += dy[o];
                }
% endif
            dx[e] = sum;
        }
    }
}
% endif
