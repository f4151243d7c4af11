## loss.cl.mako - fused loss + gradient + accuracy of a shard of a mini-batch, one row per sample:
##   softmax_ce   row_loss = (logsumexp(z) - z[label]) / global_n
##                dlogits  = (softmax(z) - onehot(label)) / global_n
##   sigmoid_bce  row_loss = sum_c (max(z_c, 0) - z_c*t_c + log(1 + exp(-|z_c|))) / global_n,
##                t = onehot(label): binary cross-entropy of each output against the one-hot target
##                dlogits  = (sigmoid(z) - t) / global_n
##   both         row_correct = 1 if the row's argmax (the first maximum on ties) == label, else 0
## The one-hot target is never stored: t_c is (c == label). Dividing by the size of the whole
## mini-batch (global_n), not the shard's, makes the shards of a batch add up to the batch.
## Numerically stable for any finite logits: softmax subtracts the row max, BCE and sigmoid take
## exp only of -|z|.
##
## Memory layout (packed, element offsets):
##   logits[n][classes], dlogits[n][classes] float32; row_loss[n] float32; row_correct[n] int32;
##   labels[labels_off + row], of type label_type ("int" = int32, "uchar" = uint8).
## Context: n, classes (compile-time shape), loss ("softmax_ce" | "sigmoid_bce"), label_type.
##
## Tunables (LossParams in hetcl/codegen/loss.py). NDRange global = (TPR, ceil(n/RPG)*RPG),
## local = (TPR, RPG): work-item (t, r) of group g works on row g*RPG + r.
##   TPR  work-items per row. 1: a work-item does a whole row, no local memory, no barriers
##        (CPUs; few classes). > 1 (a power of two): class c belongs to work-item c % TPR
##        (neighbouring work-items read neighbouring logits: coalesced on GPUs) and the row's
##        max/argmax and sums are combined by a fixed-order tree in local memory (many classes).
##   RPG  rows per work-group.
<%
T = TPR
tree = [T >> k for k in range(1, T.bit_length())]  # T/2, T/4, .., 1
label_c = {"int": "int", "uchar": "uchar"}[label_type]
%>
#define N ${n}
#define C ${classes}
#define TPR ${TPR}
#define RPG ${RPG}

__kernel __attribute__((reqd_work_group_size(TPR, RPG, 1)))
void ${loss}(__global const float* restrict logits, __global const ${label_c}* restrict labels,
             const int labels_off, const float global_n, __global float* restrict dlogits,
             __global float* restrict row_loss, __global int* restrict row_correct)
{
    const int t = get_local_id(0), r = get_local_id(1);
    const int row = get_group_id(1) * RPG + r;
    // Rows past the end read the last row (so every work-item reaches every barrier) and
    // write nothing.
    const int rr = min(row, N - 1);
    __global const float* z = logits + rr * C;
    const int label = (int)labels[labels_off + rr];
% if T > 1:
    __local float red_v[RPG][TPR];
    __local int red_i[RPG][TPR];
% endif

    // Max and first argmax over this work-item's classes c = t, t + TPR, ...; C marks "none".
    float m = -INFINITY;
    int am = C;
    for (int c = t; c < C; c += TPR) {
        const float v = z[c];
        if (v > m || am == C) { m = v; am = c; }
    }
% if T > 1:
    // Tree over the row's work-items: larger value wins, equal values -> smaller class index.
    red_v[r][t] = m;
    red_i[r][t] = am;
    barrier(CLK_LOCAL_MEM_FENCE);
%  for h in tree:
    if (t < ${h}) {
        const float v = red_v[r][t + ${h}];
        const int i = red_i[r][t + ${h}];
        if (i != C && (red_i[r][t] == C || v > red_v[r][t] || (v == red_v[r][t] && i < red_i[r][t]))) {
            red_v[r][t] = v;
            red_i[r][t] = i;
        }
    }
    barrier(CLK_LOCAL_MEM_FENCE);
%  endfor
    m = red_v[r][0];
    am = red_i[r][0];
    barrier(CLK_LOCAL_MEM_FENCE);  // red_v is reused for the sums below
% endif

    // This work-item's share of the row sum: sum exp(z - max) (softmax) or the BCE terms.
    float part = 0.0f;
    for (int c = t; c < C; c += TPR) {
        const float v = z[c];
% if loss == "softmax_ce":
        part += exp(v - m);
% else:
        part += fmax(v, 0.0f) - (c == label ? v : 0.0f) + log1p(exp(-fabs(v)));
% endif
    }
% if T > 1:
    red_v[r][t] = part;
    barrier(CLK_LOCAL_MEM_FENCE);
%  for h in tree:
    if (t < ${h}) red_v[r][t] += red_v[r][t + ${h}];
    barrier(CLK_LOCAL_MEM_FENCE);
%  endfor
    const float total = red_v[r][0];
% else:
    const float total = part;
% endif

    if (row < N) {
        __global float* dz = dlogits + row * C;
% if loss == "softmax_ce":
        const float inv_sum = 1.0f / total;
        for (int c = t; c < C; c += TPR)
            dz[c] = (exp(z[c] - m) * inv_sum - (c == label ? 1.0f : 0.0f)) / global_n;
        if (t == 0)
            row_loss[row] = (log(total) - (z[label] - m)) / global_n;
% else:
        for (int c = t; c < C; c += TPR) {
            const float v = z[c];
            const float e = exp(-fabs(v));  // stable sigmoid: 1/(1+e^-v) or e^v/(1+e^v)
            const float sig = v >= 0.0f ? 1.0f / (1.0f + e) : e / (1.0f + e);
            dz[c] = (sig - (c == label ? 1.0f : 0.0f)) / global_n;
        }
        if (t == 0)
            row_loss[row] = total / global_n;
% endif
        if (t == 0)
            row_correct[row] = (am == label) ? 1 : 0;
    }
}
