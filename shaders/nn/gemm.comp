#version 450
// Tiled fp32 GEMM through shared memory, batched:
//   C[z] = alpha * op(A[z]) * op(B[z]) + beta * C[z]        (row-major; op = transpose when TRANS_A / TRANS_B)
// op(A) is M x K: A is stored M x K (lda >= K), or K x M (lda >= M) when TRANS_A. Likewise op(B) is K x N.
// A workgroup computes a BM x BN tile of C; each invocation a TM x TN block of it, accumulating over K in BK
// slices staged in shared memory. Tiles and batches are walked with a stride, so any grid within the device's
// limits covers any problem. With beta == 0, C is never read (NaN-poisoned outputs stay harmless).
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"

layout(local_size_x_id = 0) in;             // (BM / TM) * (BN / TN)
layout(constant_id = 1) const uint BM = 64;
layout(constant_id = 2) const uint BN = 64;
layout(constant_id = 3) const uint BK = 16;
layout(constant_id = 4) const uint TM = 4;
layout(constant_id = 5) const uint TN = 4;
layout(constant_id = 6) const bool TRANS_A = false;
layout(constant_id = 7) const bool TRANS_B = false;

layout(std430, binding = 0) readonly buffer BufA { float A[]; };
layout(std430, binding = 1) readonly buffer BufB { float B[]; };
layout(std430, binding = 2) buffer BufC { float C[]; };

layout(push_constant) uniform Push {
    uint M, N, K;
    uint lda, ldb, ldc;
    uint batch;
    uint strideA, strideB, strideC;
    float alpha, beta;
    uint kLast;   // the last batch entry's K: the tensor-core kernel's split K; here always K
} p;

// k-major tiles; the +4 pad spreads the transposing stores over banks while keeping 16-byte alignment.
const uint AS = BM + 4;
const uint BS = BN + 4;
shared float As[BK * AS];
shared float Bs[BK * BS];

const uint THREADS_N = BN / TN;
const uint THREADS = (BM / TM) * (BN / TN);

void main() {
    const uint tid = gl_LocalInvocationID.x;
    const uint tn = tid % THREADS_N;   // this invocation's block: rows tm*TM.., columns tn*TN..
    const uint tm = tid / THREADS_N;
    const uint tilesN = (p.N + BN - 1) / BN;
    const uint tilesM = (p.M + BM - 1) / BM;
    const uint tiles = tilesN * tilesM;
    const uint groups = gl_NumWorkGroups.x * gl_NumWorkGroups.y;

    for (uint z = gl_WorkGroupID.z; z < p.batch; z += gl_NumWorkGroups.z) {
        const uint baseA = z * p.strideA;
        const uint baseB = z * p.strideB;
        const uint baseC = z * p.strideC;
        for (uint tile = gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x; tile < tiles; tile += groups) {
            const uint row0 = (tile / tilesN) * BM;
            const uint col0 = (tile % tilesN) * BN;

            float acc[TM * TN];
            [[unroll]] for (uint i = 0; i < TM * TN; ++i) {
                acc[i] = 0.0;
            }

            for (uint k0 = 0; k0 < p.K; k0 += BK) {
                // Stage op(A)[row0 .. row0+BM, k0 .. k0+BK] as As[k][m]; consecutive invocations read
                // consecutive addresses of the stored layout.
                [[unroll]] for (uint e = tid; e < BM * BK; e += THREADS) {
                    uint m, k;
                    if (TRANS_A) { m = e % BM; k = e / BM; } else { k = e % BK; m = e / BK; }
                    const uint gm = row0 + m;
                    const uint gk = k0 + k;
                    float v = 0.0;
                    if (gm < p.M && gk < p.K) {
                        v = TRANS_A ? A[baseA + gk * p.lda + gm] : A[baseA + gm * p.lda + gk];
                    }
                    As[k * AS + m] = v;
                }
                // Stage op(B)[k0 .. k0+BK, col0 .. col0+BN] as Bs[k][n].
                [[unroll]] for (uint e = tid; e < BN * BK; e += THREADS) {
                    uint n, k;
                    if (TRANS_B) { k = e % BK; n = e / BK; } else { n = e % BN; k = e / BN; }
                    const uint gn = col0 + n;
                    const uint gk = k0 + k;
                    float v = 0.0;
                    if (gn < p.N && gk < p.K) {
                        v = TRANS_B ? B[baseB + gn * p.ldb + gk] : B[baseB + gk * p.ldb + gn];
                    }
                    Bs[k * BS + n] = v;
                }
                barrier();

                [[unroll]] for (uint k = 0; k < BK; ++k) {
                    float a[TM];
                    float b[TN];
                    [[unroll]] for (uint i = 0; i < TM; ++i) {
                        a[i] = As[k * AS + tm * TM + i];
                    }
                    [[unroll]] for (uint j = 0; j < TN; ++j) {
                        b[j] = Bs[k * BS + tn * TN + j];
                    }
                    [[unroll]] for (uint i = 0; i < TM; ++i) {
                        [[unroll]] for (uint j = 0; j < TN; ++j) {
                            acc[i * TN + j] = fma(a[i], b[j], acc[i * TN + j]);
                        }
                    }
                }
                barrier();
            }

            [[unroll]] for (uint i = 0; i < TM; ++i) {
                const uint gm = row0 + tm * TM + i;
                if (gm >= p.M) {
                    break;
                }
                [[unroll]] for (uint j = 0; j < TN; ++j) {
                    const uint gn = col0 + tn * TN + j;
                    if (gn < p.N) {
                        const uint c = baseC + gm * p.ldc + gn;
                        float r = p.alpha * acc[i * TN + j];
                        if (p.beta != 0.0) {
                            r += p.beta * C[c];
                        }
                        C[c] = r;
                    }
                }
            }
        }
    }
}
