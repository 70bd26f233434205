#version 450
// Tiled fp32 GEMM through shared memory, batched:
//   C[z] = alpha * op(A[z]) * op(B[z]) + beta * C[z]        (row-major; op = transpose when TRANS_A / TRANS_B)
// op(A) is M x K: A is stored M x K (lda >= K), or K x M (lda >= M) when TRANS_A. Likewise op(B) is K x N.
// A workgroup computes a BM x BN tile of C; each invocation a TM x TN block of it (TM and TN multiples of 4),
// accumulating over K in BK slices staged in shared memory. Tiles and batches are walked with a stride, so any grid within the device's
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

// k-major tiles of vec4s: an invocation reads its TM rows and TN columns as 16-byte words. The one-word pad per k
// spreads the transposing stores over banks.
const uint AS4 = BM / 4 + 1;
const uint BS4 = BN / 4 + 1;
shared vec4 As4[BK * AS4];
shared vec4 Bs4[BK * BS4];

const uint THREADS_N = BN / TN;
const uint THREADS_M = BM / TM;
const uint THREADS = THREADS_M * THREADS_N;
// An invocation's TM x TN block is (TM / 4) x (TN / 4) words of 4 x 4, spread over the tile: its rows are
// g * 4 * THREADS_M + tm * 4 + i, so a subgroup's reads of a k row of Bs4 are consecutive words (no bank conflicts).
const uint GM = TM / 4;
const uint GN = TN / 4;
// Elements of a slice each invocation stages: read from memory into registers a slice ahead (their loads in flight
// while the slice before is multiplied), stored into shared memory after it.
const uint A_PER = (BM * BK + THREADS - 1) / THREADS;
const uint B_PER = (BN * BK + THREADS - 1) / THREADS;
float ra[A_PER];
float rb[B_PER];

uint tid, baseA, baseB, row0, col0;

// Element e of a slice's staging, in the order consecutive invocations read memory: its (m, k) in op(A), (k, n) in op(B).
void a_at(uint e, out uint m, out uint k) {
    if (TRANS_A) { m = e % BM; k = e / BM; } else { k = e % BK; m = e / BK; }
}

void b_at(uint e, out uint n, out uint k) {
    if (TRANS_B) { k = e % BK; n = e / BK; } else { n = e % BN; k = e / BN; }
}

// op(A)[row0 .., k0 ..] and op(B)[k0 .., col0 ..] into registers; consecutive invocations read consecutive addresses
// of the stored layout.
void load_slice(uint k0) {
    [[unroll]] for (uint q = 0; q < A_PER; ++q) {
        const uint e = tid + q * THREADS;
        uint m, k;
        a_at(e, m, k);
        const uint gm = row0 + m;
        const uint gk = k0 + k;
        ra[q] = 0.0;
        if (e < BM * BK && gm < p.M && gk < p.K) {
            ra[q] = TRANS_A ? A[baseA + gk * p.lda + gm] : A[baseA + gm * p.lda + gk];
        }
    }
    [[unroll]] for (uint q = 0; q < B_PER; ++q) {
        const uint e = tid + q * THREADS;
        uint n, k;
        b_at(e, n, k);
        const uint gn = col0 + n;
        const uint gk = k0 + k;
        rb[q] = 0.0;
        if (e < BN * BK && gn < p.N && gk < p.K) {
            rb[q] = TRANS_B ? B[baseB + gn * p.ldb + gk] : B[baseB + gk * p.ldb + gn];
        }
    }
}

void store_slice() {
    [[unroll]] for (uint q = 0; q < A_PER; ++q) {
        const uint e = tid + q * THREADS;
        uint m, k;
        a_at(e, m, k);
        if (e < BM * BK) {
            As4[k * AS4 + m / 4][m % 4] = ra[q];
        }
    }
    [[unroll]] for (uint q = 0; q < B_PER; ++q) {
        const uint e = tid + q * THREADS;
        uint n, k;
        b_at(e, n, k);
        if (e < BN * BK) {
            Bs4[k * BS4 + n / 4][n % 4] = rb[q];
        }
    }
}

void main() {
    tid = gl_LocalInvocationID.x;
    const uint tn = tid % THREADS_N;
    const uint tm = tid / THREADS_N;
    const uint tilesN = (p.N + BN - 1) / BN;
    const uint tilesM = (p.M + BM - 1) / BM;
    const uint tiles = tilesN * tilesM;
    const uint groups = gl_NumWorkGroups.x * gl_NumWorkGroups.y;

    for (uint z = gl_WorkGroupID.z; z < p.batch; z += gl_NumWorkGroups.z) {
        baseA = z * p.strideA;
        baseB = z * p.strideB;
        const uint baseC = z * p.strideC;
        for (uint tile = gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x; tile < tiles; tile += groups) {
            row0 = (tile / tilesN) * BM;
            col0 = (tile % tilesN) * BN;

            float acc[TM * TN];
            [[unroll]] for (uint i = 0; i < TM * TN; ++i) {
                acc[i] = 0.0;
            }

            load_slice(0);
            for (uint k0 = 0; k0 < p.K; k0 += BK) {
                barrier();   // every invocation is done reading the slice before (or the tile before)
                store_slice();
                barrier();
                if (k0 + BK < p.K) {
                    load_slice(k0 + BK);
                }

                [[unroll]] for (uint k = 0; k < BK; ++k) {
                    vec4 a[GM];
                    vec4 b[GN];
                    [[unroll]] for (uint g = 0; g < GM; ++g) {
                        a[g] = As4[k * AS4 + g * THREADS_M + tm];
                    }
                    [[unroll]] for (uint h = 0; h < GN; ++h) {
                        b[h] = Bs4[k * BS4 + h * THREADS_N + tn];
                    }
                    [[unroll]] for (uint g = 0; g < GM; ++g) {
                        [[unroll]] for (uint i = 0; i < 4; ++i) {
                            [[unroll]] for (uint h = 0; h < GN; ++h) {
                                [[unroll]] for (uint j = 0; j < 4; ++j) {
                                    acc[(g * 4 + i) * TN + h * 4 + j] = fma(a[g][i], b[h][j], acc[(g * 4 + i) * TN + h * 4 + j]);
                                }
                            }
                        }
                    }
                }
            }

            [[unroll]] for (uint g = 0; g < GM; ++g) {
                [[unroll]] for (uint i = 0; i < 4; ++i) {
                    const uint gm = row0 + g * 4 * THREADS_M + tm * 4 + i;
                    if (gm >= p.M) {
                        continue;
                    }
                    [[unroll]] for (uint h = 0; h < GN; ++h) {
                        [[unroll]] for (uint j = 0; j < 4; ++j) {
                            const uint gn = col0 + h * 4 * THREADS_N + tn * 4 + j;
                            if (gn < p.N) {
                                const uint c = baseC + gm * p.ldc + gn;
                                float r = p.alpha * acc[(g * 4 + i) * TN + h * 4 + j];
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
    }
}
