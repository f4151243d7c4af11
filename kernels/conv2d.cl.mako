## conv2d.cl.mako - im2col and col2im: the data movement that turns a 2-D convolution into GEMMs.
##
## Rendered once per layer shape; ``kernel`` picks which of the two kernels this program holds
## ("im2col" or "col2im"), so a layer compiles only what it launches.
##
## Shapes (compile-time constants, lower case in the context, so index math folds):
##   c, h, w      input channels, height, width of one image
##   kh, kw       kernel height, width;   sh, sw  strides;   ph, pw  zero padding (each side)
##   images       images in the chunk one launch handles
##   OH = (h + 2*ph - kh)//sh + 1,  OW = (w + 2*pw - kw)//sw + 1
##
## Memory layout (float32, element offsets, row-major):
##   x, dx  NCHW: pixel (n, ch, y, x) of the chunk at  off + ((n*c + ch)*h + y)*w + x,
##          off = x_off / dx_off (the chunk's first image inside a larger batch buffer).
##          im2col also reads other plane orders: plane (n, ch) at off + n*img_stride +
##          ch*chan_stride (defaults c*h*w and h*w: NCHW). A conv's backward-data pass reads its
##          dz in the [F, N*OH*OW] layout that way (img_stride = OH*OW, chan_stride = N*OH*OW).
##   col    [c*kh*kw, images*OH*OW], packed (row stride = COLS = images*OH*OW):
##          row    r = ch*kh*kw + i*kw + j       (i < kh, j < kw: the tap of the kernel)
##          column q = n*OH*OW + oy*OW + ox      (the output pixel)
##          col[r, q] = x[n, ch, oy*sh - ph + i, ox*sw - pw + j], 0 where that is padding.
##   Conv weights W[F, c, kh, kw] viewed as [F, c*kh*kw] multiply col directly (Y = W @ col).
##
## wflip (kernel == "wflip"; c = filters F, h = channels C of the weights, kh x kw the taps):
##   Wt[C, F*kh*kw] from W[F, C, kh, kw]: Wt[ch, (f, i, j)] = W[f, ch, kh-1-i, kw-1-j], the
##   weights of the stride-1 convolution that maps dY back to dX. One work-item per element.
##
## Two work decompositions, chosen by PLANES:
## PLANES = 0 (GPUs): one work-item per item and group of CPT channels, consecutive work-items
##   on consecutive items, so accesses coalesce across a warp.
##   im2col: item = output column q; the work-item writes the kh*kw rows of each of its channels.
##   col2im: the adjoint of im2col as a gather: item = input pixel; the work-item sums col over
##   the (oy, ox) windows that cover its pixel, in a fixed order, and overwrites dx.
##   NDRange: global = (ceil(items / (WG*WPT)) * WG, ceil(c / CPT)), local = (WG, 1);
##   items = images*OH*OW columns (im2col) or images*h*w pixels (col2im).
## PLANES = 1 (CPUs): one work-item per task = one (channel ch, image n) plane, n fastest, so
##   consecutive tasks continue the same kh*kw streams of col. Every tap (i, j) is unrolled, so
##   the range of (oy, ox) whose input pixel lies inside the image is a compile-time constant:
##   im2col copies runs of an input row into a contiguous run of col row (ch, i, j) (plain loops
##   with constant bounds, which LLVM vectorises; zero-fills the padding), col2im zeroes the dx
##   plane and adds each col row's run into it, taps in row-major order. No per-element
##   branches, no division per element. Contiguous loads and stores: ~10x faster on PoCL than
##   PLANES = 0, whose per-column work-items gather and scatter.
##   NDRange: global = (ceil(images*c / (WG*WPT)) * WG, 1), local = (WG, 1); CPT must be 1.
## In both, work-item t of group g owns items (tasks) g*WG*WPT + t + k*WG (k < WPT): strided by
##   WG so that the work-group touches WG consecutive items at each step k. Both gathers are
##   deterministic (fixed order, no atomics); overlapping windows (stride < kernel) just work.
##
## Tunables (hetcl/codegen/conv.py: Im2ColParams / Col2ImParams, which also check them):
##   WG      work-items per work-group (along the items / tasks)
##   WPT     items (columns / pixels / planes) per work-item: amortises index math
##   CPT     channels per work-item (PLANES = 0): reuses the decoded (n, oy, ox) / window bounds
##   PLANES  0: per-column / per-pixel work-items; 1: per-plane work-items (see above). With
##           PLANES = 1 on devices without features["simt"], the kernel asks for
##           min_vector_width(512) (full-width AVX-512 vectors).
##
## Index math: offsets into x/dx and col are size_t (images*c*h*w or rows*COLS can pass 2^31);
## per-image quantities stay int.
<%
OH = (h + 2 * ph - kh) // sh + 1
OW = (w + 2 * pw - kw) // sw + 1
OHW = OH * OW
HW = h * w
KK = kh * kw
COLS = images * OHW
NPIX = images * HW
padded = ph > 0 or pw > 0
IMG = context.get("img_stride", c * HW)   # plane (n, ch) of the input at n*IMG + ch*CHS
CHS = context.get("chan_stride", HW)
# End (exclusive) of this work-item's channel group; the clamp is only needed when CPT does not divide c.
ch_end = "min(ch0 + %d, %d)" % (CPT, c) if c % CPT else "ch0 + %d" % CPT
%>
#define WG ${WG}
<%def name="cpu_attrs()">\
## Kernel head of the PLANES = 1 kernels.
% if features.get("simt", True):
__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
% else:
__kernel __attribute__((reqd_work_group_size(WG, 1, 1))) __attribute__((min_vector_width(512)))
% endif
</%def>

% if kernel == "wflip":
__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void wflip(__global const float* restrict W, __global float* restrict Wt)
{
    const int t = get_global_id(0);    // element of Wt: (ch, f, tap)
    if (t >= ${c * h * KK})
        return;
    const int ch = t / ${c * KK}, rest = t - ch * ${c * KK};
    const int f = rest / ${KK}, tap = rest - f * ${KK};
    Wt[t] = W[(f * ${h} + ch) * ${KK} + ${KK - 1} - tap];
}

% elif kernel == "im2col" and PLANES:
${cpu_attrs()}
void im2col(__global const float* restrict x, const long x_off, __global float* restrict col)
{
    const int t0 = get_group_id(0) * (WG * ${WPT}) + get_local_id(0);
    x += x_off;
    for (int k = 0; k < ${WPT}; ++k) {
        const int t = t0 + k * WG;      // task (ch, n): one plane of x, n fastest
        if (t >= ${images * c})
            break;
        const int ch = t / ${images}, n = t - ch * ${images};
        __global const float* src = x + (size_t)n * ${IMG} + (size_t)ch * ${CHS};
        __global float* dst = col + (size_t)ch * ${KK} * ${COLS}UL + (size_t)n * ${OHW};
% for i in range(kh):
<%
    # oy whose row iy = oy*sh - ph + i lies inside [0, h): [ylo, yhi) (empty: all padding)
    ylo = min(OH, max(0, -(-(ph - i) // sh)))
    yhi = max(ylo, min(OH, (h - 1 + ph - i) // sh + 1))
%>
%  for j in range(kw):
<%
    # ox whose column ix = ox*sw - pw + j lies inside [0, w): [xlo, xhi)
    xlo = min(OW, max(0, -(-(pw - j) // sw)))
    xhi = max(xlo, min(OW, (w - 1 + pw - j) // sw + 1))
    r = (i * kw + j) * COLS
%>
%   if ylo > 0:
        for (int p = 0; p < ${ylo * OW}; ++p) dst[${r} + p] = 0.0f;
%   endif
        for (int oy = ${ylo}; oy < ${yhi}; ++oy) {
%   if xlo > 0:
            for (int ox = 0; ox < ${xlo}; ++ox) dst[${r} + oy * ${OW} + ox] = 0.0f;
%   endif
            for (int ox = ${xlo}; ox < ${xhi}; ++ox)
                dst[${r} + oy * ${OW} + ox] = src[(oy * ${sh} + ${i - ph}) * ${w} + ox * ${sw} + ${j - pw}];
%   if xhi < OW:
            for (int ox = ${xhi}; ox < ${OW}; ++ox) dst[${r} + oy * ${OW} + ox] = 0.0f;
%   endif
        }
%   if yhi < OH:
        for (int p = ${yhi * OW}; p < ${OHW}; ++p) dst[${r} + p] = 0.0f;
%   endif
%  endfor
% endfor
    }
}

% elif kernel == "im2col":
__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void im2col(__global const float* restrict x, const long x_off, __global float* restrict col)
{
    const size_t q0 = get_group_id(0) * (size_t)(WG * ${WPT}) + get_local_id(0);
    const int ch0 = get_global_id(1) * ${CPT};
    x += x_off;
    for (int k = 0; k < ${WPT}; ++k) {
        const size_t q = q0 + k * WG;
        if (q >= ${COLS}UL)
            break;
        const size_t n = q / ${OHW};
        const int p = (int)(q - n * ${OHW});
        const int iy0 = (p / ${OW}) * ${sh} - ${ph};
        const int ix0 = (p % ${OW}) * ${sw} - ${pw};
        for (int ch = ch0; ch < ${ch_end}; ++ch) {
            __global const float* src = x + n * (size_t)${IMG} + (size_t)ch * ${CHS};
            __global float* dst = col + (size_t)ch * ${KK} * ${COLS}UL + q;
            for (int i = 0; i < ${kh}; ++i) {
                const int iy = iy0 + i;
                for (int j = 0; j < ${kw}; ++j) {
                    const int ix = ix0 + j;
% if padded:
                    const bool inside = iy >= 0 && iy < ${h} && ix >= 0 && ix < ${w};
                    dst[(size_t)(i * ${kw} + j) * ${COLS}UL] = inside ? src[iy * ${w} + ix] : 0.0f;
% else:
                    dst[(size_t)(i * ${kw} + j) * ${COLS}UL] = src[iy * ${w} + ix];
% endif
                }
            }
        }
    }
}

% elif kernel == "col2im" and PLANES:
${cpu_attrs()}
void col2im(__global const float* restrict col, __global float* restrict dx, const long dx_off)
{
    const int t0 = get_group_id(0) * (WG * ${WPT}) + get_local_id(0);
    dx += dx_off;
    for (int k = 0; k < ${WPT}; ++k) {
        const int t = t0 + k * WG;      // task (ch, n): one plane of dx, n fastest
        if (t >= ${images * c})
            break;
        const int ch = t / ${images}, n = t - ch * ${images};
        __global float* d = dx + (size_t)(n * ${c} + ch) * ${HW};
        __global const float* s = col + (size_t)ch * ${KK} * ${COLS}UL + (size_t)n * ${OHW};
        for (int p = 0; p < ${HW}; ++p) d[p] = 0.0f;
% for i in range(kh):
<%
    # oy whose row iy = oy*sh - ph + i lies inside [0, h): [ylo, yhi) (empty: all padding)
    ylo = min(OH, max(0, -(-(ph - i) // sh)))
    yhi = max(ylo, min(OH, (h - 1 + ph - i) // sh + 1))
%>
%  for j in range(kw):
<%
    # ox whose column ix = ox*sw - pw + j lies inside [0, w): [xlo, xhi)
    xlo = min(OW, max(0, -(-(pw - j) // sw)))
    xhi = max(xlo, min(OW, (w - 1 + pw - j) // sw + 1))
%>
%   if ylo < yhi and xlo < xhi:
        for (int oy = ${ylo}; oy < ${yhi}; ++oy)
            for (int ox = ${xlo}; ox < ${xhi}; ++ox)
                d[(oy * ${sh} + ${i - ph}) * ${w} + ox * ${sw} + ${j - pw}] += s[${(i * kw + j) * COLS} + oy * ${OW} + ox];
%   endif
%  endfor
% endfor
    }
}

% elif kernel == "col2im":
__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void col2im(__global const float* restrict col, __global float* restrict dx, const long dx_off)
{
    const size_t p0 = get_group_id(0) * (size_t)(WG * ${WPT}) + get_local_id(0);
    const int ch0 = get_global_id(1) * ${CPT};
    dx += dx_off;
    for (int k = 0; k < ${WPT}; ++k) {
        const size_t pix = p0 + k * WG;
        if (pix >= ${NPIX}UL)
            break;
        const size_t n = pix / ${HW};
        const int p = (int)(pix - n * ${HW});
        // Position in the padded image; output (oy, ox) reads it through tap
        // (yp - oy*sh, xp - ox*sw) when that tap lies inside the kernel.
        const int yp = p / ${w} + ${ph}, xp = p % ${w} + ${pw};
        const int oy_lo = yp >= ${kh} ? (yp - ${kh}) / ${sh} + 1 : 0;
        const int oy_hi = min(yp / ${sh}, ${OH - 1});
        const int ox_lo = xp >= ${kw} ? (xp - ${kw}) / ${sw} + 1 : 0;
        const int ox_hi = min(xp / ${sw}, ${OW - 1});
        __global const float* src = col + n * ${OHW};
        for (int ch = ch0; ch < ${ch_end}; ++ch) {
            __global const float* src_c = src + (size_t)ch * ${KK} * ${COLS}UL;
            float sum = 0.0f;
            for (int oy = oy_lo; oy <= oy_hi; ++oy) {
                const int i = yp - oy * ${sh};
                for (int ox = ox_lo; ox <= ox_hi; ++ox) {
                    const int j = xp - ox * ${sw};
                    sum += src_c[(size_t)(i * ${kw} + j) * ${COLS}UL + oy * ${OW} + ox];
                }
            }
            dx[(n * ${c} + ch) * (size_t)${HW} + p] = sum;
        }
    }
}
% endif
