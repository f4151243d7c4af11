## gemm.cl.mako - batched single-precision GEMM:  C[b] = alpha * op(A[b]) op(B[b]) + beta * C[b]
##
## Memory layout (all row-major, as numpy stores a C-ordered array; element offsets, not bytes):
##   op(A) is M x K. trans_a = False: A[m, k] at A[a_off + b*a_bstride + m*lda + k]   (lda >= K)
##                   trans_a = True : A[m, k] at A[a_off + b*a_bstride + k*lda + m]   (lda >= M)
##   op(B) is K x N. trans_b = False: B[k, n] at B[b_off + b*b_bstride + k*ldb + n]   (ldb >= N)
##                   trans_b = True : B[k, n] at B[b_off + b*b_bstride + n*ldb + k]   (ldb >= K)
##   C is M x N.     trans_c = False: C[m, n] at C[c_off + b*c_bstride + m*ldc + n]   (ldc >= N)
##                   trans_c = True : C[m, n] at C[c_off + b*c_bstride + n*ldc + m]   (ldc >= M)
##   trans_c (optional, default False) lets the host compute C^T = op(B)^T op(A)^T instead,
##   with the operands swapped (hetcl/codegen/gemm.py does so for trans_a and trans_b together
##   without local memory: that turns the case into the fast trans_a = trans_b = False one).
##   b = get_group_id(2) is the batch index (batched GEMM: one launch for every image of a conv).
##
## Epilogue (context epilogue = (act, S); a conv layer's forward, hetcl/engine/ops.py): the kernel takes
## one more argument, bias[M], and stores Y = act(alpha * op(A) op(B) + bias[m]) straight into
## an NCHW batch instead of C: column n = img*S + p (image, pixel) of row m (filter) goes to
##   C[c_off + img*M*S + m*S + p]
## (ldc, c_bstride and beta unused; batch 1). act: none | relu | sigmoid, as eltwise's bias_act
## computes them, so the outputs are those of GEMM + bias_act, without the [M, N] round trip.
##   beta == 0 never reads C, so C may hold garbage (NaN) on entry.
##
## NDRange: global = (ceil(N/NWG)*NDIMC, ceil(M/MWG)*MDIMC, batch), local = (NDIMC, MDIMC, 1).
## Work-group (gx, gy) computes the MWG x NWG tile of C at rows gy*MWG, columns gx*NWG. Work-item
## (tx, ty) owns MWI rows of the tile - with local memory the VWM consecutive rows that start at
## (ty + i*MDIMC)*VWM (i < MWI/VWM; conflict-free vector reads of the A tile), without it
## ty*MWI + i (a compact block; work-items wholly past M skip the loop) -
## and the VWN-wide column vectors that start at (tx + j*NDIMC)*VWN (j < NV = NWI/VWN):
## neighbouring work-items own neighbouring columns, so loads of B and stores of C are contiguous
## across a warp (GPU). It keeps MWI*NV accumulator vectors of VWN floats.
##
## Tunables (hetcl/codegen/params.py: GemmParams, which also checks them):
##   MWG, NWG  rows / columns of C per work-group          (MWI = MWG/MDIMC, NWI = NWG/NDIMC)
##   KWG       K step. With local memory: depth of the local tiles. Without: depth of the K
##             panel after which the work-items of a group meet at a barrier (PoCL runs them
##             one after the other between barriers, so the MDIMC work-items stacked along M
##             read the same KWG x NWI panel of B from L1). Unused by the "dot" form.
##   MDIMC, NDIMC  work-group shape (rows x columns of work-items)
##   VWN       vector width: float, float2 .. float16 (accumulators, C stores, and the loads below)
##   USE_LOCAL 1: stage MWG x KWG of A and KWG x NWG of B in local memory (GPUs);
##             0: read A and B straight from global memory and let the caches work (CPUs)
##   VWM       (local memory only; 1 without) vector width of the reads of the A tile: the
##             tile is stored K-major (transposed), so both A (VWM rows) and B (VWN columns)
##             come out of local memory as vectors - float4 and float4 give 2 + 2 reads per
##             64 FMAs of an 8x8 block instead of 16 scalar reads. MWI must be a multiple.
##   MLOOP     (without local memory, any transposes; 1 = off; >1 replaces the "dot" form) the
##             work-item first copies its KWG x NWI panel of op(B) into private memory (packed,
##             contiguous) and then runs MLOOP register blocks of MWI rows one after the other
##             over it (MWI = MWG/(MDIMC*MLOOP)). B's rows at a large power-of-two ldb all map
##             to one cache set, so without packing a panel read again by the next row block
##             has already left L1/L2; packed, it is read from memory once. Each row block
##             stores its part of C after each panel (beta applies to the first panel only).
##             No epilogue.
##   DBUF      (local memory only; 0 without) 1: two buffers of each tile; the next K tile is
##             read from global memory into registers before the current one is multiplied
##             and stored into the other buffer after it, so the loads' latency hides behind
##             the arithmetic and a K step needs one barrier instead of two. 0: one buffer.
##
## Local-memory path (GPUs): per K step each work-item moves MWG*KWG/(MDIMC*NDIMC) elements of
## A and KWG*NWG/(MDIMC*NDIMC) of B (consecutive work-items along the stored operand's
## contiguous dimension: coalesced), with bounds checks only in edge tiles (a uniform branch),
## then multiplies out of local memory with the kk loop unrolled. Rows of the tiles are padded
## (A by VWM floats, B by VWN when trans_b) against bank conflicts of the transposing stores,
## keeping vector alignment. Local memory: KWG*((MWG+VWM) + (NWG+VWN))*4 bytes, twice with DBUF.
##
## Inner loops without local memory (CPUs: each work-item is a register-blocked micro-kernel,
## PoCL runs work-groups on threads and LLVM keeps the accumulators in registers):
##   trans_b = False ("axpy" form): per k, one VWN-vector load of each owned B row segment and
##             one broadcast of each owned A element; acc[i][j] += a[i] * b[j].
##   trans_b = True, trans_a = False ("dot" form): op(B)'s columns and A's rows are contiguous
##             along K, so vectors run along K instead: VWN passes, pass p handles lane p of every
##             owned column vector with MWI*NV dot products of VWN-wide partial sums, reduced at
##             the end of the pass; the K % VWN tail is scalar.
##   (trans_a and trans_b: the host swaps the operands, see trans_c; rendered directly, the axpy
##   form gathers B one element at a time.)
## Vector loads from global memory are spelled as VWN scalar loads at constant offsets from one
## pointer (LLVM merges them into one unaligned load), and the arithmetic as plain * and +
## (contracted to FMA): PoCL's vloadN / mad are out-of-line calls that cost 4x here. On devices
## without features["simt"] the kernel asks for min_vector_width(32*VWN) so LLVM does not split
## float16 into two 256-bit halves (its default on some AVX-512 CPUs).
## Any M, N, K works: edge tiles are handled by bounds checks (local) or by a checked variant of
## the loop that only edge work-groups take (no local), never by padding the operands.
<%
trans_c = context.get("trans_c", False)
epilogue = context.get("epilogue", None)
if epilogue is not None and trans_c:
    raise ValueError("the epilogue stores NCHW rows itself: not with trans_c")
MLOOP = context.get("MLOOP", 1)
if MLOOP > 1 and (epilogue is not None or USE_LOCAL):
    raise ValueError("MLOOP > 1: without local memory and without the epilogue only")
MWI = MWG // (MDIMC * MLOOP)
NWI = NWG // NDIMC
NV = NWI // VWN
V = VWN
vt = "float" if V == 1 else "float%d" % V
LANES = "0123456789abcdef"
DOT = trans_b and not trans_a and not USE_LOCAL and MLOOP == 1
vta = "float" if VWM == 1 else "float%d" % VWM
# Local-memory path: padded rows of the tiles (floats), buffers, and the elements of A and of
# B that each work-item stages per K step (GemmParams.check makes them divide evenly).
SA = MWG + VWM
SB = NWG + (V if trans_b else 0)
NBUF = 2 if DBUF else 1
LA = MWG * KWG // (MDIMC * NDIMC)
LB = KWG * NWG // (MDIMC * NDIMC)
A_FAST = MWG if trans_a else KWG  # extent of the stored operand's contiguous dimension
B_FAST = KWG if trans_b else NWG

def split(l, fast, f0, s0):
    """(fast, slow) tile coordinates of the l-th element a work-item stages: element
    tid + l*threads of the tile, with f0 = tid % fast, s0 = tid / fast; static offsets from
    f0 and s0 where the work-group size and the fast extent divide one another."""
    t = MDIMC * NDIMC
    if t % fast == 0:
        return f0, "%s + %d" % (s0, l * t // fast)
    if fast % t == 0:
        return "%s + %d" % (f0, l * t % fast), "%s + %d" % (s0, l * t // fast)
    e = "(tid + %d)" % (l * t)
    return "%s %% %d" % (e, fast), "%s / %d" % (e, fast)

def row(i):
    """Tile row of the work-item's i-th row: with local memory VWM-row groups interleaved
    MDIMC apart (vector local reads of A, conflict-free), contiguous without (each work-item a
    compact block; whole ones past M skip)."""
    if USE_LOCAL:
        return "(ty + %d) * %d + %d" % (i // VWM * MDIMC, VWM, i % VWM)
    if MLOOP > 1:  # block rb (a loop variable) of the work-item's MLOOP
        return "(ty * %d + rb) * %d + %d" % (MLOOP, MWI, i)
    return "ty * %d + %d" % (MWI, i)

def lane_of(width, expr, v):
    return expr if width == 1 else "(%s).s%s" % (expr, LANES[v])

def lane(expr, v):
    return lane_of(V, expr, v)

def lane_m(expr, v):
    return lane_of(VWM, expr, v)

def A_at(m, k):
    return ("A[(%s)*lda + (%s)]" % (k, m)) if trans_a else ("A[(%s)*lda + (%s)]" % (m, k))

def B_at(k, n):
    return ("B[(%s)*ldb + (%s)]" % (n, k)) if trans_b else ("B[(%s)*ldb + (%s)]" % (k, n))

def vec(items):
    return items[0] if V == 1 else "(%s)(%s)" % (vt, ", ".join(items))

def C_ptr(r, c):
    if epilogue is not None:  # NCHW: image (c)/S, filter r, pixel (c)%S
        S = epilogue[1]
        return "C + (size_t)((%s) / %d) * (M * %d) + (%s) * %d + (%s) %% %d" % (c, S, S, r, S, c, S)
    return ("C + (size_t)(%s) * ldc + (%s)" % (c, r)) if trans_c else ("C + (size_t)(%s) * ldc + (%s)" % (r, c))
%>
#define MWG ${MWG}
#define NWG ${NWG}
#define KWG ${KWG}
#define MDIMC ${MDIMC}
#define NDIMC ${NDIMC}
% if V > 1:
// VWN consecutive floats from p (any alignment): one vector load after LLVM combines them.
#define LOADV(p) ((${vt})(${", ".join("(p)[%d]" % v for v in range(V))}))
% else:
#define LOADV(p) ((p)[0])
% endif

% if epilogue is not None:
// The epilogue's activation, as eltwise's bias_act: relu keeps NaN (x < 0 is false for it);
// sigmoid in the stable form (exp only of -|x|).
inline float act_fn(const float x) {
%  if epilogue[0] == "relu":
    return x < 0.0f ? 0.0f : x;
%  elif epilogue[0] == "sigmoid":
    const float e = exp(-fabs(x));
    const float r = 1.0f / (1.0f + e);
    return x >= 0.0f ? r : e * r;
%  else:
    return x;
%  endif
}

% endif
% if not features.get("simt", True) and V >= 8:
// CPU: LLVM may prefer 256-bit registers on AVX-512 machines and split every float16 in two;
// asking for the full width keeps one register per vector.
__kernel __attribute__((reqd_work_group_size(NDIMC, MDIMC, 1))) __attribute__((min_vector_width(${32 * V})))
% else:
__kernel __attribute__((reqd_work_group_size(NDIMC, MDIMC, 1)))
% endif
void gemm(const int M, const int N, const int K, const float alpha, const float beta,
          __global const float* restrict A, const int a_off, const int lda, const int a_bstride,
          __global const float* restrict B, const int b_off, const int ldb, const int b_bstride,
          __global float* restrict C, const int c_off, const int ldc, const int c_bstride${", __global const float* restrict bias" if epilogue is not None else ""})
{
    const int tx = get_local_id(0), ty = get_local_id(1);
    const int row0 = get_group_id(1) * MWG, col0 = get_group_id(0) * NWG;
    const size_t batch = get_group_id(2);
    A += a_off + batch * a_bstride;
    B += b_off + batch * b_bstride;
    C += c_off + batch * c_bstride;

% for i in range(MWI):
%  for j in range(NV):
    ${vt} acc${i}_${j} = (${vt})(0.0f);
%  endfor
% endfor

% if USE_LOCAL:
    // Local tiles, k-major: As[k][m] (A transposed) and Bs[k][n], declared as arrays of VWM-
    // and VWN-wide vectors so that the inner loop reads both with vector loads from local
    // memory; scalar views (as, bs) take the staging stores. Rows are padded (SA, SB: still a
    // multiple of the vector width) against bank conflicts of the transposing stores.
    __local ${vta} As[${NBUF * KWG * SA // VWM}];
    __local ${vt} Bs[${NBUF * KWG * SB // V}];
    __local float* as = (__local float*)As;
    __local float* bs = (__local float*)Bs;
    const int tid = ty * NDIMC + tx;
    // Staging: this work-item's share of the next tiles, read from global memory. Consecutive
    // work-items read consecutive addresses of the stored operand (contiguous along M or K for
    // A, K or N for B); out of range -> 0.
    const int a_f = tid % ${A_FAST}, a_s = tid / ${A_FAST};
    const int b_f = tid % ${B_FAST}, b_s = tid / ${B_FAST};
    const bool full_m = row0 + MWG <= M, full_n = col0 + NWG <= N;
%  for l in range(LA):
    float ra${l};
%  endfor
%  for l in range(LB):
    float rb${l};
%  endfor
%  if DBUF:
    // Double buffering: tile t is in buffer t % 2; while it is multiplied, tile t + 1 is read
    // into registers and then stored into the other buffer, so one barrier per K step suffices.
${tile_load("0")}
${tile_store("0")}
    barrier(CLK_LOCAL_MEM_FENCE);
    for (int k0 = 0, buf = 0; k0 < K; k0 += KWG, buf ^= 1) {
        const bool more = k0 + KWG < K;
        if (more) {
${tile_load("k0 + KWG")}
        }
${tile_multiply("buf")}
        if (more) {
${tile_store("buf ^ 1")}
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
%  else:
    for (int k0 = 0; k0 < K; k0 += KWG) {
${tile_load("k0")}
${tile_store("0")}
        barrier(CLK_LOCAL_MEM_FENCE);
${tile_multiply("0")}
        barrier(CLK_LOCAL_MEM_FENCE);
    }
%  endif
% elif MLOOP > 1:
    // Packed panels (see MLOOP in the header); each row block stores its part of C itself.
    if (row0 + MWG <= M && col0 + NWG <= N) {
${packed_body(False)}
    } else {
${packed_body(True)}
    }
% elif DOT:
    // "dot" form (trans_b, not trans_a): rows of A and columns of op(B) are contiguous along K.
    if (row0 + MWG <= M && col0 + NWG <= N) {
${dot_body(False)}
    } else {
${dot_body(True)}
    }
% else:
    // "axpy" form: acc[i][j] += A[row i, k] * (VWN consecutive columns of row k of op(B)).
    if (row0 + MWG <= M && col0 + NWG <= N) {
${axpy_body(False)}
    } else {
${axpy_body(True)}
    }
% endif

% if epilogue is not None:
${epilogue_store()}
% elif MLOOP == 1:
${store_c("beta")}
% endif
}
<%def name="store_c(beta)">
    // Store: C = alpha*acc + ${beta}*C, only inside the matrix; a whole vector at once where it fits.
% for i in range(MWI):
    {
        const int r = row0 + ${row(i)};
        if (r < M) {
%  for j in range(NV):
            {
                const int c = col0 + (tx + ${j * NDIMC}) * ${V};
%   if V > 1 and not trans_c:
                __global float* dst = ${C_ptr("r", "c")};
                if (c + ${V} <= N) {
                    ${vt} out = alpha * acc${i}_${j};
                    if (${beta} != 0.0f) out += ${beta} * LOADV(dst);
%    for v in range(V):
                    dst[${v}] = ${lane("out", v)};
%    endfor
                } else {
%    for v in range(V):
                    if (c + ${v} < N) dst[${v}] = alpha * ${lane("acc%d_%d" % (i, j), v)} + (${beta} != 0.0f ? ${beta} * dst[${v}] : 0.0f);
%    endfor
                }
%   else:
%    for v in range(V):
                if (c + ${v} < N) {
                    __global float* dst = ${C_ptr("r", "c + %d" % v)};
                    *dst = alpha * ${lane("acc%d_%d" % (i, j), v)} + (${beta} != 0.0f ? ${beta} * *dst : 0.0f);
                }
%    endfor
%   endif
            }
%  endfor
        }
    }
% endfor
</%def>
<%def name="epilogue_store()">
<%
act, S = epilogue
# V consecutive columns start at a multiple of V: with S % V == 0 they lie in one image's row
VEC = V > 1 and S % V == 0
%>
    // Epilogue store: act(alpha*acc + bias[r]) into the NCHW output (see the header).
% for i in range(MWI):
    {
        const int r = row0 + ${row(i)};
        if (r < M) {
            const float b = bias[r];
%  for j in range(NV):
            {
                const int c = col0 + (tx + ${j * NDIMC}) * ${V};
%   if VEC:
                if (c + ${V} <= N) {
                    __global float* dst = ${C_ptr("r", "c")};
%    for v in range(V):
                    dst[${v}] = act_fn(alpha * ${lane("acc%d_%d" % (i, j), v)} + b);
%    endfor
                } else
%   endif
                {
%   for v in range(V):
                    if (c + ${v} < N) *(${C_ptr("r", "c + %d" % v)}) = act_fn(alpha * ${lane("acc%d_%d" % (i, j), v)} + b);
%   endfor
                }
            }
%  endfor
        }
    }
% endfor
</%def>
<%def name="tile_load(k0)">
        // Tiles wholly inside the matrices (the uniform, common case) load without checks.
        {
            const bool full_k = (${k0}) + KWG <= K;
            if (full_m && full_k) {
${tile_load_part(k0, "A", False)}
            } else {
${tile_load_part(k0, "A", True)}
            }
            if (full_n && full_k) {
${tile_load_part(k0, "B", False)}
            } else {
${tile_load_part(k0, "B", True)}
            }
        }
</%def>
<%def name="tile_load_part(k0, op, checked)">
%  for l in range(LA if op == "A" else LB):
%   if op == "A":
<% f, s = split(l, A_FAST, "a_f", "a_s"); x, kk = (f, s) if trans_a else (s, f) %>\
                {
                    const int gm = row0 + ${x}, gk = (${k0}) + ${kk};
                    ra${l} = ${"(gm < M && gk < K) ? %s : 0.0f" % A_at("gm", "gk") if checked else A_at("gm", "gk")};
                }
%   else:
<% f, s = split(l, B_FAST, "b_f", "b_s"); x, kk = (s, f) if trans_b else (f, s) %>\
                {
                    const int gn = col0 + ${x}, gk = (${k0}) + ${kk};
                    rb${l} = ${"(gn < N && gk < K) ? %s : 0.0f" % B_at("gk", "gn") if checked else B_at("gk", "gn")};
                }
%   endif
%  endfor
</%def>
<%def name="tile_store(buf)">
        {
            __local float* ab = as + (${buf}) * ${KWG * SA};
            __local float* bb = bs + (${buf}) * ${KWG * SB};
%  for l in range(LA):
<% f, s = split(l, A_FAST, "a_f", "a_s"); mm, kk = (f, s) if trans_a else (s, f) %>\
            ab[(${kk}) * ${SA} + ${mm}] = ra${l};
%  endfor
%  for l in range(LB):
<% f, s = split(l, B_FAST, "b_f", "b_s"); nn, kk = (s, f) if trans_b else (f, s) %>\
            bb[(${kk}) * ${SB} + ${nn}] = rb${l};
%  endfor
        }
</%def>
<%def name="tile_multiply(buf)">
        {
            __local const ${vta}* at = As + (${buf}) * ${KWG * SA // VWM};
            __local const ${vt}* bt = Bs + (${buf}) * ${KWG * SB // V};
            #pragma unroll
            for (int kk = 0; kk < KWG; ++kk) {
%  for i in range(MWI // VWM):
                const ${vta} a${i} = at[kk * ${SA // VWM} + ty + ${i * MDIMC}];
%  endfor
%  for j in range(NV):
                const ${vt} b${j} = bt[kk * ${SB // V} + tx + ${j * NDIMC}];
%  endfor
%  for i in range(MWI // VWM):
%   for w in range(VWM):
%    for j in range(NV):
                acc${i * VWM + w}_${j} += ${lane_m("a%d" % i, w)} * b${j};
%    endfor
%   endfor
%  endfor
            }
        }
</%def>
<%def name="axpy_body(clamp)">
        // ${"Edge work-group: rows and columns past the edge are clamped to the last valid one, so loads stay in bounds without a branch in the loop; the store drops those results." if clamp else "Interior work-group: no checks."}
        // Pointers and offsets are hoisted so that the loop body is loads at constant offsets.
%  for i in range(MWI):
        const int r${i} = ${"min(row0 + %s, M - 1)" % row(i) if clamp else "row0 + " + row(i)};
%   if not trans_a:
        __global const float* pa${i} = A + (size_t)r${i} * lda;
%   endif
%  endfor
%  for j in range(NV):
        const int c${j} = col0 + (tx + ${j * NDIMC}) * ${V};
%   for v in range(V if clamp or trans_b else 0):
        const int c${j}_${v} = ${"min(c%d + %d, N - 1)" % (j, v) if clamp else "c%d + %d" % (j, v)};
%   endfor
%  endfor
%  if clamp:
        const bool live = row0 + ${row(0)} < M && col0 + tx * ${V} < N;  // owns any valid element
%  endif
        for (int k0 = 0; k0 < K; k0 += KWG) {
%  if clamp:
            if (live)
%  endif
            for (int k = k0, k1 = k0 + KWG < K ? k0 + KWG : K; k < k1; ++k) {
%  if trans_a:
                __global const float* ak = A + (size_t)k * lda;
%  endif
%  if not trans_b:
                __global const float* bk = B + (size_t)k * ldb;
%  endif
%  for i in range(MWI):
                const float a${i} = ${"ak[r%d]" % i if trans_a else "pa%d[k]" % i};
%  endfor
%  for j in range(NV):
%   if trans_b:
                const ${vt} b${j} = ${vec(["B[(size_t)c%d_%d * ldb + k]" % (j, v) for v in range(V)])};
%   elif clamp:
                const ${vt} b${j} = ${vec(["bk[c%d_%d]" % (j, v) for v in range(V)])};
%   else:
                const ${vt} b${j} = LOADV(bk + c${j});
%   endif
%  endfor
%  for i in range(MWI):
%   for j in range(NV):
                acc${i}_${j} += a${i} * b${j};
%   endfor
%  endfor
            }
%  if MDIMC * NDIMC > 1:
            barrier(CLK_LOCAL_MEM_FENCE);  // keeps the work-items in step on a KWG panel
%  endif
        }
</%def>
<%def name="dot_body(clamp)">
        // ${"Edge work-group: rows and columns past the edge are clamped to the last valid one (loads stay in bounds); the store drops those results." if clamp else "Interior work-group: no checks."}
%  for i in range(MWI):
        __global const float* pa${i} = A + (size_t)${"min(row0 + %s, M - 1)" % row(i) if clamp else "(row0 + %s)" % row(i)} * lda;
%  endfor
        float res[${MWI}][${NV}][${V}];
        for (int p = 0; p < ${V}; ++p) {
%  for j in range(NV):
            __global const float* pb${j} = B + (size_t)${"min(col0 + (tx + %d) * %d + p, N - 1)" % (j * NDIMC, V) if clamp else "(col0 + (tx + %d) * %d + p)" % (j * NDIMC, V)} * ldb;
%  endfor
%  for i in range(MWI):
%   for j in range(NV):
            ${vt} d${i}_${j} = (${vt})(0.0f);
%   endfor
%  endfor
            int k = 0;
            for (; k + ${V} <= K; k += ${V}) {
%  for i in range(MWI):
                const ${vt} a${i} = LOADV(pa${i} + k);
%  endfor
%  for j in range(NV):
                const ${vt} b${j} = LOADV(pb${j} + k);
%  endfor
%  for i in range(MWI):
%   for j in range(NV):
                d${i}_${j} += a${i} * b${j};
%   endfor
%  endfor
            }
%  for i in range(MWI):
%   for j in range(NV):
            float s${i}_${j} = ${" + ".join(lane("d%d_%d" % (i, j), v) for v in range(V))};
%   endfor
%  endfor
            for (; k < K; ++k) {
%  for i in range(MWI):
                const float a${i} = pa${i}[k];
%  endfor
%  for j in range(NV):
                const float b${j} = pb${j}[k];
%  endfor
%  for i in range(MWI):
%   for j in range(NV):
                s${i}_${j} += a${i} * b${j};
%   endfor
%  endfor
            }
%  for i in range(MWI):
%   for j in range(NV):
            res[${i}][${j}][p] = s${i}_${j};
%   endfor
%  endfor
        }
%  for i in range(MWI):
%   for j in range(NV):
        acc${i}_${j} = LOADV(res[${i}][${j}]);
%   endfor
%  endfor
</%def>

<%def name="packed_body(clamp)">
        // ${"Edge work-group: columns past the edge are clamped to the last valid one while packing, rows in the loads; the store drops those results." if clamp else "Interior work-group: no checks."}
        float bp[${KWG * NWI}];
%  for j in range(NV):
        const int c${j} = col0 + (tx + ${j * NDIMC}) * ${V};
%   for v in range(V):
        const int c${j}_${v} = ${"min(c%d + %d, N - 1)" % (j, v) if clamp else "c%d + %d" % (j, v)};
%   endfor
%  endfor
        for (int k0 = 0; k0 < K; k0 += KWG) {
            const int kn = k0 + KWG < K ? KWG : K - k0;
            const float beta_k = k0 == 0 ? beta : 1.0f;
            for (int kk = 0; kk < kn; ++kk) {
                const int k = k0 + kk;
%  for j in range(NV):
%   for v in range(V):
                bp[kk * ${NWI} + ${j * V + v}] = ${"B[(size_t)c%d_%d * ldb + k]" % (j, v) if trans_b else "B[(size_t)k * ldb + c%d_%d]" % (j, v)};
%   endfor
%  endfor
            }
            for (int rb = 0; rb < ${MLOOP}; ++rb) {
%  if clamp:
                if (row0 + ${row(0)} >= M) break;
%  endif
%  for i in range(MWI):
                const int r${i} = ${"min(row0 + %s, M - 1)" % row(i) if clamp else "row0 + " + row(i)};
%   for j in range(NV):
                acc${i}_${j} = (${vt})(0.0f);
%   endfor
%  endfor
                for (int kk = 0; kk < kn; ++kk) {
                    const int k = k0 + kk;
%  for i in range(MWI):
                    const float a${i} = ${"A[(size_t)k * lda + r%d]" % i if trans_a else "A[(size_t)r%d * lda + k]" % i};
%  endfor
%  for j in range(NV):
                    const ${vt} b${j} = LOADV(bp + kk * ${NWI} + ${j * V});
%  endfor
%  for i in range(MWI):
%   for j in range(NV):
                    acc${i}_${j} += a${i} * b${j};
%   endfor
%  endfor
                }
${store_c("beta_k")}
            }
        }
</%def>
