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
##   beta == 0 never reads C, so C may hold garbage (NaN) on entry.
##
## NDRange: global = (ceil(N/NWG)*NDIMC, ceil(M/MWG)*MDIMC, batch), local = (NDIMC, MDIMC, 1).
## Work-group (gx, gy) computes the MWG x NWG tile of C at rows gy*MWG, columns gx*NWG. Work-item
## (tx, ty) owns MWI rows of the tile - ty + i*MDIMC (i < MWI) with local memory (conflict-free
## local reads), ty*MWI + i without (a compact block; work-items wholly past M skip the loop) -
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
MWI = MWG // MDIMC
NWI = NWG // NDIMC
NV = NWI // VWN
V = VWN
vt = "float" if V == 1 else "float%d" % V
LANES = "0123456789abcdef"
DOT = trans_b and not trans_a and not USE_LOCAL

def row(i):
    """Tile row of the work-item's i-th row: interleaved with local memory (conflict-free local
    reads), contiguous without (each work-item a compact block; whole ones past M skip)."""
    return ("ty + %d" % (i * MDIMC)) if USE_LOCAL else ("ty * %d + %d" % (MWI, i))

def lane(expr, v):
    return expr if V == 1 else "(%s).s%s" % (expr, LANES[v])

def A_at(m, k):
    return ("A[(%s)*lda + (%s)]" % (k, m)) if trans_a else ("A[(%s)*lda + (%s)]" % (m, k))

def B_at(k, n):
    return ("B[(%s)*ldb + (%s)]" % (n, k)) if trans_b else ("B[(%s)*ldb + (%s)]" % (k, n))

def vec(items):
    return items[0] if V == 1 else "(%s)(%s)" % (vt, ", ".join(items))

def C_ptr(r, c):
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
          __global float* restrict C, const int c_off, const int ldc, const int c_bstride)
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
    // Local tiles, k-major: As[k][m] and Bs[k][n]. A's row is padded by one float so that the
    // transposing store (consecutive work-items write consecutive k) avoids bank conflicts.
    __local float As[KWG][MWG + 1];
    __local float Bs[KWG][NWG + ${1 if trans_b else 0}];
    const int tid = ty * NDIMC + tx;
    for (int k0 = 0; k0 < K; k0 += KWG) {
        // Cooperative loads; consecutive work-items read consecutive addresses of the stored
        // operand (the contiguous dimension depends on the transpose). Out of range -> 0.
        for (int e = tid; e < MWG * KWG; e += MDIMC * NDIMC) {
%  if trans_a:
            const int mm = e % MWG, kk = e / MWG;
%  else:
            const int kk = e % KWG, mm = e / KWG;
%  endif
            const int gm = row0 + mm, gk = k0 + kk;
            As[kk][mm] = (gm < M && gk < K) ? ${A_at("gm", "gk")} : 0.0f;
        }
        for (int e = tid; e < KWG * NWG; e += MDIMC * NDIMC) {
%  if trans_b:
            const int kk = e % KWG, nn = e / KWG;
%  else:
            const int nn = e % NWG, kk = e / NWG;
%  endif
            const int gn = col0 + nn, gk = k0 + kk;
            Bs[kk][nn] = (gn < N && gk < K) ? ${B_at("gk", "gn")} : 0.0f;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
        #pragma unroll
        for (int kk = 0; kk < KWG; ++kk) {
%  for i in range(MWI):
            const float a${i} = As[kk][ty + ${i * MDIMC}];
%  endfor
%  for j in range(NV):
            const ${vt} b${j} = ${("Bs[kk][tx + %d]" % (j * NDIMC)) if V == 1 else "vload%d(0, &Bs[kk][(tx + %d) * %d])" % (V, j * NDIMC, V)};
%  endfor
%  for i in range(MWI):
%   for j in range(NV):
            acc${i}_${j} += a${i} * b${j};
%   endfor
%  endfor
        }
        barrier(CLK_LOCAL_MEM_FENCE);
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

    // Store: C = alpha*acc + beta*C, only inside the matrix; a whole vector at once where it fits.
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
                    if (beta != 0.0f) out += beta * LOADV(dst);
%    for v in range(V):
                    dst[${v}] = ${lane("out", v)};
%    endfor
                } else {
%    for v in range(V):
                    if (c + ${v} < N) dst[${v}] = alpha * ${lane("acc%d_%d" % (i, j), v)} + (beta != 0.0f ? beta * dst[${v}] : 0.0f);
%    endfor
                }
%   else:
%    for v in range(V):
                if (c + ${v} < N) {
                    __global float* dst = ${C_ptr("r", "c + %d" % v)};
                    *dst = alpha * ${lane("acc%d_%d" % (i, j), v)} + (beta != 0.0f ? beta * *dst : 0.0f);
                }
%    endfor
%   endif
            }
%  endfor
        }
    }
% endfor
}
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
