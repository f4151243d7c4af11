## gather.cl.mako - a mini-batch from the device-resident dataset, normalised on the fly:
##   x[b, :] = ((float)images[indices[b], :] / 255 - mean) / std,  y[b] = (int)labels[indices[b]]
## for b < count (count <= batch, a runtime argument: the shard of a last, partial batch).
## Rows b >= count of x and y are not written.
##
## Shapes (compile-time, lower case in the context): batch (rows of x and y), s (sample size =
## C*H*W bytes per image). The number of images N is a runtime argument (n_images), so one
## program serves the train and the test set.
##
## Memory layout (packed, row-major, element offsets):
##   images   uint8   [N, s]      image i starts at i*s (size_t: N*s passes 2^31 for big sets)
##   labels   uint8   [N]
##   indices  int32   [batch]     rows of images to take; repeats are fine
##   x        float32 [batch, s]  row b starts at b*s
##   y        int32   [batch]
## The normalisation is one multiply-add, x = v*scale + shift with scale = 1/(255*std) and
## shift = -mean/std (runtime float arguments, computed in float64 on the host): a new dataset
## needs no rebuild. An index outside [0, N) reads nothing: its row of x is NaN and y is -1, so
## the loss turns NaN instead of memory being read out of bounds.
##
## NDRange: global = (ceil(units / (WG*WPT)) * WG, batch), local = (WG, 1), where a unit is VW
##   consecutive bytes of a row and units = ceil(s / VW). Work-item t of group g in dimension 0
##   owns units g*WG*WPT + t + k*WG (k < WPT) of row b = get_global_id(1): strided by WG, so a
##   work-group touches WG consecutive units at each step k (coalesced on GPUs, the direction
##   PoCL vectorises on CPUs). Work-item 0 of each row also writes y[b].
##
## Tunables (hetcl/codegen/gather.py: GatherParams, which also checks them):
##   WG   work-items per work-group (dimension 0)
##   WPT  units per work-item
##   VW   bytes per unit: one vload of a ucharVW, converted to floatVW, stored with vstore
##        (alignment of uchar/float is enough for vloadN/vstoreN). The unit that runs past the
##        end of a row (s % VW != 0) is done byte by byte.
<%
FULL = s // VW          # units that lie wholly inside a row
TAIL = s - FULL * VW    # bytes of the last, partial unit (0: none)
UNITS = FULL + (1 if TAIL else 0)
FT = "float" if VW == 1 else "float%d" % VW
%>
#define WG ${WG}

__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
void gather(__global const uchar* restrict images, __global const uchar* restrict labels,
            __global const int* restrict indices, __global float* restrict x,
            __global int* restrict y, const long n_images, const int count,
            const float scale, const float shift)
{
    const int b = get_global_id(1);
    if (b >= count)
        return;                          // no barriers below: early exit is safe
    const long idx = indices[b];
    const bool ok = idx >= 0 && idx < n_images;
    if (get_global_id(0) == 0)
        y[b] = ok ? (int)labels[idx] : -1;
    __global const uchar* src = images + (size_t)(ok ? idx : 0) * ${s}UL;
    __global float* dst = x + (size_t)b * ${s}UL;
    const float bad = ok ? 0.0f : NAN;   // added to every value: NaN rows for a bad index
    const int u0 = get_group_id(0) * (WG * ${WPT}) + get_local_id(0);
    for (int k = 0; k < ${WPT}; ++k) {
        const int u = u0 + k * WG;
        if (u >= ${UNITS})
            break;
% if FULL:
        if (u < ${FULL}) {
%  if VW == 1:
            dst[u] = (float)src[u] * scale + shift + bad;
%  else:
            const ${FT} v = convert_${FT}(vload${VW}(u, src));
            vstore${VW}(v * scale + shift + bad, u, dst);
%  endif
            continue;
        }
% endif
% if TAIL:
        // The last, partial unit of the row: byte by byte.
%  for j in range(TAIL):
        dst[${FULL * VW + j}] = (float)src[${FULL * VW + j}] * scale + shift + bad;
%  endfor
% endif
    }
}
