## avgpool.cl.mako - average pooling, forward and backward, without padding (every window lies
## wholly inside the image, so each averages kh*kw pixels). A global average pool is the window
## of the whole image (kh = h, kw = w).
##
## Rendered once per layer shape; ``kernel`` picks which kernel this program holds
## ("avgpool_fwd" or "avgpool_bwd").
##
## Shapes (compile-time constants, lower case in the context, so index math folds):
##   images, c, h, w   input batch, channels, height, width
##   kh, kw            window height, width;   sh, sw  strides (sh < kh: overlapping windows)
##   OH = (h - kh)//sh + 1,  OW = (w - kw)//sw + 1
##
## Memory layout (element offsets, row-major, every array packed):
##   x, dx   float32 [images, c, h, w];   plane P = n*c + ch starts at P*h*w
##   y, dy   float32 [images, c, OH, OW]; plane P starts at P*OH*OW
##
## Kernels, one work-item per item:
##   avgpool_fwd  item = output element (P, oy, ox): y = (sum of its window, row-major) / (kh*kw)
##   avgpool_bwd  item = input pixel (P, iy, ix): dx = (sum of dy over the windows that contain
##                it, oy then ox ascending) / (kh*kw); it overwrites dx (0 where no window
##                covers the pixel: stride > window). A gather: no atomics, deterministic.
##
## Tunables (hetcl/codegen/avgpool.py: AvgPoolParams, which also checks them):
##   WG   work-items per work-group
##   WPT  items per work-item: work-item t of group g owns items g*WG*WPT + t + k*WG (k < WPT),
##        strided by WG so that a work-group touches WG consecutive items at each step k.
## NDRange: global = (ceil(items / (WG*WPT)) * WG), local = (WG); items = images*c*OH*OW (fwd)
## or images*c*h*w (bwd).
##
## Index math: element offsets are size_t (images*c*h*w can pass 2^31); in-plane ones are int.
<%
OH = (h - kh) // sh + 1
OW = (w - kw) // sw + 1
ITEMS = images * c * (OH * OW if kernel == "avgpool_fwd" else h * w)
%>
#define WG ${WG}

__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
% if kernel == "avgpool_fwd":
void avgpool_fwd(__global const float* restrict x, __global float* restrict y)
% else:
void avgpool_bwd(__global const float* restrict dy, __global float* restrict dx)
% endif
{
    const size_t t0 = (size_t)get_group_id(0) * (WG * ${WPT}) + get_local_id(0);
    for (int k = 0; k < ${WPT}; ++k) {
        const size_t item = t0 + (size_t)k * WG;
        if (item >= ${ITEMS}UL)
            return;
% if kernel == "avgpool_fwd":
        const size_t plane = item / ${OH * OW};
        const int o = (int)(item - plane * ${OH * OW});
        const int oy = o / ${OW}, ox = o - oy * ${OW};
        __global const float* src = x + plane * ${h * w} + oy * ${sh * w} + ox * ${sw};
        float sum = 0.0f;
        for (int i = 0; i < ${kh}; ++i)
            for (int j = 0; j < ${kw}; ++j)
                sum += src[i * ${w} + j];
        y[item] = sum / ${float(kh * kw)}f;
% else:
        const size_t plane = item / ${h * w};
        const int p = (int)(item - plane * ${h * w});
        const int iy = p / ${w}, ix = p - iy * ${w};
        // windows oy with oy*sh <= iy <= oy*sh + kh - 1, likewise ox
        const int oy0 = iy >= ${kh} ? (iy - ${kh}) / ${sh} + 1 : 0;
        const int oy1 = min(iy / ${sh}, ${OH - 1});
        const int ox0 = ix >= ${kw} ? (ix - ${kw}) / ${sw} + 1 : 0;
        const int ox1 = min(ix / ${sw}, ${OW - 1});
        __global const float* src = dy + plane * ${OH * OW};
        float sum = 0.0f;
        for (int oy = oy0; oy <= oy1; ++oy)
            for (int ox = ox0; ox <= ox1; ++ox)
                sum += src[oy * ${OW} + ox];
        dx[item] = sum / ${float(kh * kw)}f;
% endif
    }
}
