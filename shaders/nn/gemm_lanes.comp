#version 450
// fp32 GEMM for CPU Vulkan drivers; same contract and push constants as gemm.comp:
//   C[z] = alpha * op(A[z]) * op(B[z]) + beta * C[z]        (row-major; op = transpose when TRANS_A / TRANS_B)
// Why a second kernel: llvmpipe runs a workgroup on one thread, its invocations as the lanes of one SIMD vector,
// and turns every buffer or shared-memory load whose address is not a push constant expression into a scalar loop
// over the lanes. gemm.comp loads each shared element into every lane that needs it, pays that loop for each,
// and switches coroutines at each barrier. Here a workgroup is W invocations (W = the subgroup size, one vector)
// computing a BM x BN tile of C (BM = RG * W rows, BN = TN * W columns) with no shared memory and no barrier:
// lane l owns columns col0 + j*W + l (j < TN) of all BM rows. Per k, each lane loads TN elements of op(B) and, for
// each group of W rows, the op(A) element of row W*r + l; subgroupBroadcast (a register shuffle on llvmpipe)
// hands each row's value to every lane. Every lane of every load thus fetches a distinct element, and each
// loaded element feeds TN or W fused multiply-adds.
// When the workgroup is not one subgroup (a driver with smaller subgroups) the rows' values are loaded directly:
// slower, same results. With beta == 0, C is never read.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#extension GL_KHR_shader_subgroup_ballot : require
#include "common.glsl"

layout(local_size_x_id = 0) in;             // W
layout(constant_id = 1) const uint RG = 1;  // row groups of W rows
layout(constant_id = 2) const uint TN = 3;  // columns per lane
layout(constant_id = 3) const bool TRANS_A = false;
layout(constant_id = 4) const bool TRANS_B = false;

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

const uint W = gl_WorkGroupSize.x;
const uint BM = RG * W;
const uint BN = TN * W;

// One k step of the tile: loads, then BM x TN fused multiply-adds per lane. ROW(r, i, a) is row r*W + i's op(A)
// value, given a = this lane's op(A) element of row group r.
#define K_STEP(ROW)                                                              \
    {                                                                            \
        float b[TN];                                                             \
        [[unroll]] for (uint j = 0; j < TN; ++j) {                               \
            b[j] = B[offB[j]];                                                   \
            offB[j] += stepB;                                                    \
        }                                                                        \
        [[unroll]] for (uint r = 0; r < RG; ++r) {                               \
            const float a = A[offA[r]];                                          \
            [[unroll]] for (uint i = 0; i < W; ++i) {                            \
                const float ai = ROW(r, i, a);                                   \
                [[unroll]] for (uint j = 0; j < TN; ++j) {                       \
                    acc[(r * W + i) * TN + j] = fma(ai, b[j], acc[(r * W + i) * TN + j]); \
                }                                                                \
            }                                                                    \
            offA[r] += stepA;                                                    \
        }                                                                        \
    }

#define ROW_BROADCAST(r, i, a) subgroupBroadcast(a, i)
#define ROW_LOAD(r, i, a) A[rowA[r * W + i]]

void main() {
    // Lane l of the one subgroup when the workgroup is one (llvmpipe: always).
    const bool oneSubgroup = gl_NumSubgroups == 1;
    const uint lane = oneSubgroup ? gl_SubgroupInvocationID : gl_LocalInvocationID.x;
    const uint tilesN = (p.N + BN - 1) / BN;
    const uint tiles = tilesN * ((p.M + BM - 1) / BM);
    const uint groups = gl_NumWorkGroups.x * gl_NumWorkGroups.y;
    // op(A)[m][k] is at m * rowStepA + k * stepA; likewise op(B)[k][n].
    const uint stepA = TRANS_A ? p.lda : 1;
    const uint rowStepA = TRANS_A ? 1 : p.lda;
    const uint stepB = TRANS_B ? 1 : p.ldb;
    const uint colStepB = TRANS_B ? p.ldb : 1;

    for (uint z = gl_WorkGroupID.z; z < p.batch; z += gl_NumWorkGroups.z) {
        for (uint tile = gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x; tile < tiles; tile += groups) {
            const uint row0 = (tile / tilesN) * BM;
            const uint col0 = (tile % tilesN) * BN;

            // Rows and columns past the edge read the last valid one (no branch around the loads); their sums
            // are never stored.
            uint offA[RG];
            [[unroll]] for (uint r = 0; r < RG; ++r) {
                offA[r] = z * p.strideA + min(row0 + r * W + lane, p.M - 1) * rowStepA;
            }
            uint offB[TN];
            [[unroll]] for (uint j = 0; j < TN; ++j) {
                offB[j] = z * p.strideB + min(col0 + j * W + lane, p.N - 1) * colStepB;
            }

            float acc[BM * TN];
            [[unroll]] for (uint i = 0; i < BM * TN; ++i) {
                acc[i] = 0.0;
            }

            if (oneSubgroup) {
                for (uint k = 0; k < p.K; ++k) K_STEP(ROW_BROADCAST)
            } else {
                uint rowA[BM];
                [[unroll]] for (uint i = 0; i < BM; ++i) {
                    rowA[i] = z * p.strideA + min(row0 + i, p.M - 1) * rowStepA;
                }
                for (uint k = 0; k < p.K; ++k) {
                    K_STEP(ROW_LOAD)
                    [[unroll]] for (uint i = 0; i < BM; ++i) {
                        rowA[i] += stepA;
                    }
                }
            }

            [[unroll]] for (uint i = 0; i < BM; ++i) {
                const uint gm = row0 + i;
                if (gm >= p.M) {
                    break;
                }
                [[unroll]] for (uint j = 0; j < TN; ++j) {
                    const uint gn = col0 + j * W + lane;
                    if (gn < p.N) {
                        const uint c = z * p.strideC + gm * p.ldc + gn;
                        float v = p.alpha * acc[i * TN + j];
                        if (p.beta != 0.0) {
                            v += p.beta * C[c];
                        }
                        C[c] = v;
                    }
                }
            }
        }
    }
}
