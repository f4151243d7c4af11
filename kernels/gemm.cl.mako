## gemm.cl.mako - batched single-precision GEMM:  C[b] = alpha * op(A[b]) op(B[b]) + beta * C[b]
##
## Memory layout (all row-major, as numpy stores a C-ordered array; element offsets, not bytes):
##   op(A) is M x K. trans_a = False: A[m, k] at A[a_off + b*a_bstride + m*lda + k]   (lda >= K)
##                   trans_a = True : A[m, k] at A[a_off + b*a_bstride + k*lda + m]   (lda >= M)
##   op(B) is K x N. trans_b = False: B[k, n] at B[b_off + b*b_bstride + k*ldb + n]   (ldb >= N)
##                   trans_b = True : B[k, n] at B[b_off + b*b_bstride + n*ldb + k]   (ldb >= K)
##   C is M x N:     C[m, n] at C[c_off + b*c_bstride + m*ldc + n]                     (ldc >= N)
##   b = get_group_id(2) is the batch index (batched GEMM: one launch for every image of a conv).
##   beta == 0 never reads C, so C may hold garbage (NaN) on entry.
##
## NDRange: global = (ceil(N/NWG)*NDIMC, ceil(M/MWG)*MDIMC, batch), local = (NDIMC, MDIMC, 1).
## Work-group (gx, gy) computes the MWG x NWG tile of C at rows gy*MWG, columns gx*NWG. Work-item
## (tx, ty) owns rows ty + i*MDIMC (i < MWI) and the VWN-wide column vectors that start at
## (tx + j*NDIMC)*VWN (j < NWI/VWN): neighbouring work-items own neighbouring columns, so loads
## of B and stores of C are contiguous across a warp (GPU) or across the lanes PoCL vectorises
## a work-group into (CPU).
##
## Tunables (hetcl/codegen/params.py: GemmParams, which also checks them):
##   MWG, NWG  rows / columns of C per work-group          (MWI = MWG/MDIMC, NWI = NWG/NDIMC)
##   KWG       K step: depth of the local-memory tiles, or the unroll factor without them
##   MDIMC, NDIMC  work-group shape (rows x columns of work-items)
##   VWN       vector width along N: float, float2 .. float16 for B loads, accumulators, C stores
##   USE_LOCAL 1: stage MWG x KWG of A and KWG x NWG of B in local memory (GPUs);
##             0: read A and B straight from global memory and let the caches work (CPUs)
## Any M, N, K works: edge tiles are handled by bounds checks (local) or by a checked variant of
## the loop that only edge work-groups take (no local), never by padding the operands.
<%
MWI = MWG // MDIMC
NWI = NWG // NDIMC
NV = NWI // VWN
V = VWN
vt = "float" if V == 1 else "float%d" % V
LANES = "0123456789abcdef"

def lane(expr, v):
    return expr if V == 1 else "(%s).s%s" % (expr, LANES[v])

def A_at(m, k):
    return ("A[(%s)*lda + (%s)]" % (k, m)) if trans_a else ("A[(%s)*lda + (%s)]" % (m, k))

def B_at(k, n):
    return ("B[(%s)*ldb + (%s)]" % (n, k)) if trans_b else ("B[(%s)*ldb + (%s)]" % (k, n))

def vec(items):
    return items[0] if V == 1 else "(%s)(%s)" % (vt, ", ".join(items))

def B_vec(k, n0, clamp):
    """VWN consecutive columns n0.. of row k of op(B). clamp: edge tiles clamp each column."""
    if not trans_b and not clamp:
        return ("B[(%s)*ldb + (%s)]" % (k, n0)) if V == 1 else "vload%d(0, B + (%s)*ldb + (%s))" % (V, k, n0)
    cols = [("min((%s) + %d, N - 1)" % (n0, v)) if clamp else "(%s) + %d" % (n0, v) for v in range(V)]
    return vec([B_at(k, c) for c in cols])
%>
#define MWG ${MWG}
#define NWG ${NWG}
#define KWG ${KWG}
#define MDIMC ${MDIMC}
#define NDIMC ${NDIMC}

__kernel __attribute__((reqd_work_group_size(NDIMC, MDIMC, 1)))
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
            acc${i}_${j} = mad((${vt})(a${i}), b${j}, acc${i}_${j});
%   endfor
%  endfor
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
% else:
% for clamp in (False, True):
    ${"if (row0 + MWG <= M && col0 + NWG <= N) {" if not clamp else "} else {"}
        // Edge work-groups clamp rows and columns past the edge to the last valid one: the
        // loads stay in bounds without a branch in the loop, and the store drops those results.
%  for i in range(MWI):
        const int r${i} = ${"min(row0 + ty + %d, M - 1)" % (i * MDIMC) if clamp else "row0 + ty + %d" % (i * MDIMC)};
%  endfor
%  for j in range(NV):
        const int c${j} = col0 + (tx + ${j * NDIMC}) * ${V};
%  endfor
        for (int k = 0; k < K; ++k) {
%  for i in range(MWI):
            const float a${i} = ${A_at("r%d" % i, "k")};
%  endfor
%  for j in range(NV):
            const ${vt} b${j} = ${B_vec("k", "c%d" % j, clamp)};
%  endfor
%  for i in range(MWI):
%   for j in range(NV):
            acc${i}_${j} = mad((${vt})(a${i}), b${j}, acc${i}_${j});
%   endfor
%  endfor
        }
% endfor
    }
% endif

    // Store: C = alpha*acc + beta*C, only inside the matrix; a whole vector at once where it fits.
% for i in range(MWI):
    {
        const int r = row0 + ty + ${i * MDIMC};
        if (r < M) {
%  for j in range(NV):
            {
                const int c = col0 + (tx + ${j * NDIMC}) * ${V};
                __global float* dst = C + (size_t)r * ldc + c;
%   if V > 1:
                if (c + ${V} <= N) {
                    ${vt} out = alpha * acc${i}_${j};
                    if (beta != 0.0f) out += beta * vload${V}(0, dst);
                    vstore${V}(out, 0, dst);
                } else {
%    for v in range(V):
                    if (c + ${v} < N) dst[${v}] = alpha * ${lane("acc%d_%d" % (i, j), v)} + (beta != 0.0f ? beta * dst[${v}] : 0.0f);
%    endfor
                }
%   else:
                if (c < N) dst[0] = alpha * acc${i}_${j} + (beta != 0.0f ? beta * dst[0] : 0.0f);
%   endif
            }
%  endfor
        }
    }
% endfor
}
