## gather.cl.mako - a mini-batch from the device-resident dataset, normalised on the fly and
## optionally augmented:
##   x[b, :] = ((float)A(images[indices[first + b]]) / 255 - mean) / std,
##   y[b] = (int)labels[indices[first + b]]
## for b < count (count <= batch, a runtime argument: the shard of a last, partial batch), with
## first a runtime row offset into indices and keys (0, or a step's place in a chunk of a
## streamed data set: hetcl/engine/chunks.py), where A is the identity or the augmentation below. Rows b >= count of x and y are not written.
##
## Context (compile-time, lower case): batch (rows of x and y), s (sample size = C*H*W bytes per
## image), label_type (the labels' element type: uchar or int), and for augmentation h, w (an
## image's rows and columns; C = s / (h*w)), pad and flip (below). label_type, pad and flip
## default to uchar, 0 and False: without augmentation the context is (batch, s) and the kernel
## has no Philox and no keys. The number of images N is a runtime argument (n_images), so one
## program serves the train and the test set.
##
## Memory layout (packed, row-major, element offsets):
##   images   uint8       [N, s]      image i starts at i*s (size_t: N*s passes 2^31 for big sets);
##                                    an image is [C, h, w]: pixel (c, i, j) at c*h*w + i*w + j
##   labels   label_type  [N]
##   indices  int32       [first + count, or more]  rows of images to take, from element
##                                    first; repeats are fine
##   keys     int32       [first + count, or more]  (augmentation only) from element first:
##                                    each row's sample key, its index in the whole data
##                                    set: the draws' counter (a streamed data set
##                                    gathers rows of a staging buffer, keyed by their data-set
##                                    indices)
##   x        float32     [batch, s]  row b starts at b*s, laid out as an image
##   y        int32       [batch]
## The normalisation is one multiply-add, x = v*scale + shift with scale = 1/(255*std) and
## shift = -mean/std (runtime float arguments, computed in float64 on the host): a new dataset
## needs no rebuild. An index outside [0, N) reads nothing: its row of x is NaN and y is -1, so
## the loss turns NaN instead of memory being read out of bounds.
##
## Augmentation (pad > 0 or flip): torchvision's RandomCrop((h, w), padding=pad) then
## RandomHorizontalFlip(0.5), on the uint8 image before normalisation; padding pixels are 0 and
## are normalised like any pixel. Row b's draws are Philox4x32-10 (kernels/philox.cl.mako) of
## key (seed_lo, seed_hi) and counter (keys[first + b], epoch, 0, 0) (uint runtime arguments: the host
## forms the key from the run's seed and the augmentation's own stream): a function of (seed,
## epoch, sample key) only, the same whatever the row, the split over devices or the batch size.
## Of the output words w0, w1, w2: dy = w0 % (2*pad+1), dx = w1 % (2*pad+1), mirror = w2 & 1
## (mirror is 0 unless flip), and output pixel
##   (c, i, j) = image[c, i + dy - pad, (mirror ? w-1-j : j) + dx - pad],  0 outside the image.
## hetcl/codegen/probes/augment.py holds the numpy reference (augment_reference).
##
## NDRange: global = (ceil(units / (WG*WPT)) * WG, batch), local = (WG, 1), where a unit is VW
##   consecutive elements of a row and units = ceil(s / VW). Work-item t of group g in
##   dimension 0 owns units g*WG*WPT + t + k*WG (k < WPT) of row b = get_global_id(1): strided
##   by WG, so a work-group touches WG consecutive units at each step k (coalesced on GPUs, the
##   direction PoCL vectorises on CPUs). Work-item 0 of each row also writes y[b]. Augmented,
##   each work-item draws its row's four words once and reuses them for all its units.
##
## Tunables (hetcl/codegen/gather.py: GatherParams, which also checks them), the same for both
## paths:
##   WG   work-items per work-group (dimension 0)
##   WPT  units per work-item
##   VW   elements per unit. Plain: one vload of a ucharVW, converted to floatVW, stored with
##        vstore (alignment of uchar/float is enough for vloadN/vstoreN); the unit that runs
##        past the end of a row (s % VW != 0) is done byte by byte. Augmented: the unit's
##        elements one by one (their sources are not consecutive where the crop or the flip
##        moves them), its (channel, row, column) found once and then stepped; more elements per
##        unit spread the draw over more of them.
<%page args="label_type='uchar', h=None, w=None, pad=0, flip=False"/>\
<%namespace name="philox" file="philox.cl.mako"/>\
<%
FULL = s // VW          # units that lie wholly inside a row
TAIL = s - FULL * VW    # elements of the last, partial unit (0: none)
UNITS = FULL + (1 if TAIL else 0)
FT = "float" if VW == 1 else "float%d" % VW
AUGMENT = pad > 0 or flip
%>
#define WG ${WG}

__kernel __attribute__((reqd_work_group_size(WG, 1, 1)))
% if AUGMENT:
void gather(__global const uchar* restrict images, __global const ${label_type}* restrict labels,
            __global const int* restrict indices, __global const int* restrict keys,
            __global float* restrict x, __global int* restrict y, const long n_images,
            const int count, const int first, const float scale, const float shift, const uint seed_lo,
            const uint seed_hi, const uint epoch)
% else:
void gather(__global const uchar* restrict images, __global const ${label_type}* restrict labels,
            __global const int* restrict indices, __global float* restrict x,
            __global int* restrict y, const long n_images, const int count,
            const int first, const float scale, const float shift)
% endif
{
    const int b = get_global_id(1);
    if (b >= count)
        return;                          // no barriers below: early exit is safe
    const long idx = indices[first + b];
    const bool ok = idx >= 0 && idx < n_images;
    if (get_global_id(0) == 0)
        y[b] = ok ? (int)labels[idx] : -1;
    __global const uchar* src = images + (size_t)(ok ? idx : 0) * ${s}UL;
    __global float* dst = x + (size_t)b * ${s}UL;
    const float bad = ok ? 0.0f : NAN;   // added to every value: NaN rows for a bad index
% if AUGMENT:
${augmented()}\
% else:
${plain()}\
% endif
}
<%def name="plain()">\
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
</%def>
<%def name="augmented()">\
<%
    HW = h * w
    row = "i + dy" if pad else "i"                                  # the source pixel's row
    col = ("(mirror ? %d - j : j)" % (w - 1)) if flip else "j"      # and column
    col = col + " + dx" if pad else col
    inside = "(uint)si < %du && (uint)sj < %du" % (h, w)            # (negative: huge as uint)
%>\
    // The row's draws: Philox4x32-10 of the counter (keys[first + b], epoch, 0, 0).
    uint r0 = (uint)keys[first + b], r1 = epoch, r2 = 0u, r3 = 0u;
${philox.rounds("uint", "ulong")}\
% if pad:
    // source row - output row, and source column - (mirrored) output column: in [-pad, pad]
    const int dy = (int)(r0 % ${2 * pad + 1}u) - ${pad};
    const int dx = (int)(r1 % ${2 * pad + 1}u) - ${pad};
% endif
% if flip:
    const bool mirror = (r2 & 1u) != 0;
% endif
    const int u0 = get_group_id(0) * (WG * ${WPT}) + get_local_id(0);
    for (int k = 0; k < ${WPT}; ++k) {
        const int u = u0 + k * WG;
        if (u >= ${UNITS})
            break;
        const int o = u * ${VW};   // the unit's first element: channel c, row i, column j
        int c = o / ${HW}, i = o % ${HW} / ${w}, j = o % ${w};
        for (int e = 0; e < ${VW}; ++e) {
% if TAIL:
            if (o + e >= ${s})
                break;
% endif
            const int si = ${row}, sj = ${col};
% if pad:
            const float v = ${inside} ? (float)src[c * ${HW} + si * ${w} + sj] : 0.0f;
% else:
            const float v = (float)src[c * ${HW} + si * ${w} + sj];
% endif
            dst[o + e] = v * scale + shift + bad;
            if (++j == ${w}) {
                j = 0;
                if (++i == ${h}) {
                    i = 0;
                    ++c;
                }
            }
        }
    }
</%def>
