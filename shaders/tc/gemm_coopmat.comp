#version 450
// Tensor-core GEMM, batched, fp32 in and out:
//   C[z] = alpha * op(A[z]) * op(B[z]) + beta * C[z]        (row-major; op = transpose when TRANS_A / TRANS_B)
// Same interface and layouts as nn/gemm.comp. Operands are rounded to OPERAND (f16, or bf16 with OPERAND_BF16)
// as they are staged in shared memory; products accumulate in fp32 cooperative matrices.
//
// Variants (docs/DESIGN.md, "Tensor-core variants"):
//   default      VK_KHR_cooperative_matrix, subgroup scope: the workgroup is a grid of subgroups, each owning a
//                WM x WN block of TM x TN accumulators (TM x TN x TK: a shape the device lists).
//   COOPMAT2     VK_NV_cooperative_matrix2, workgroup scope: one BM x BN accumulator per workgroup, the driver
//                distributes it; the epilogue stores through a clamped tensor layout.
// The K loop double-buffers the shared tiles: the next slice is read from global memory into registers while the
// current one is multiplied, then written to the other buffer; one barrier per slice.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#extension GL_KHR_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#ifdef COOPMAT2
#extension GL_NV_cooperative_matrix2 : require
#endif
#ifdef OPERAND_BF16
#extension GL_EXT_bfloat16 : require
#extension GL_EXT_shader_explicit_arithmetic_types_int16 : require
#define OPERAND bfloat16_t
// Round to nearest even by hand: a plain conversion truncates on some drivers (NVIDIA 580), which biases every
// product by up to 2^-8 and leaves no way to match a reference that rounds as PyTorch does.
bfloat16_t to_operand(float v) {
    uint u = floatBitsToUint(v);
    if (!isnan(v)) {
        u += 0x7FFFu + ((u >> 16) & 1u);
    }
    return uintBitsToBFloat16EXT(uint16_t(u >> 16));
}
#else
#define OPERAND float16_t
float16_t to_operand(float v) { return float16_t(v); }
#endif

layout(local_size_x_id = 0) in;             // KHR: (BM / WM) * (BN / WN) subgroups; coopmat2: the listed invocations
layout(constant_id = 1) const uint BM = 64;
layout(constant_id = 2) const uint BN = 64;
layout(constant_id = 3) const uint BK = 32;
layout(constant_id = 4) const uint WM = 32;  // one subgroup's block (KHR variant)
layout(constant_id = 5) const uint WN = 32;
layout(constant_id = 6) const uint TM = 16;  // the cooperative-matrix shape (KHR variant)
layout(constant_id = 7) const uint TN = 16;
layout(constant_id = 8) const uint TK = 16;
layout(constant_id = 9) const bool TRANS_A = false;
layout(constant_id = 10) const bool TRANS_B = false;
const uint THREADS = gl_WorkGroupSize.x;

layout(std430, binding = 0) readonly buffer BufA { float A[]; };
layout(std430, binding = 1) readonly buffer BufB { float B[]; };
layout(std430, binding = 2) buffer BufC { float C[]; };

layout(push_constant) uniform Push {
    uint M, N, K;
    uint lda, ldb, ldc;
    uint batch;
    uint strideA, strideB, strideC;
    float alpha, beta;
} p;

// Shared tiles keep the stored layout of the operand (so consecutive invocations write consecutive addresses)
// and the cooperative load reads them row- or column-major. The pad of 8 elements (16 bytes) breaks bank
// conflicts between rows without losing 16-byte alignment.
const uint PAD = 8;
const uint A_ROWS = TRANS_A ? BK : BM;        // stored tile: A_ROWS x A_COLS
const uint A_COLS = TRANS_A ? BM : BK;
const uint A_STRIDE = A_COLS + PAD;
const uint B_ROWS = TRANS_B ? BN : BK;
const uint B_COLS = TRANS_B ? BK : BN;
const uint B_STRIDE = B_COLS + PAD;
const uint A_TILE = A_ROWS * A_STRIDE;
const uint B_TILE = B_ROWS * B_STRIDE;
shared OPERAND As[2 * A_TILE];
shared OPERAND Bs[2 * B_TILE];

const uint A_PER_THREAD = (BM * BK + THREADS - 1) / THREADS;
const uint B_PER_THREAD = (BN * BK + THREADS - 1) / THREADS;

#ifndef COOPMAT2
const uint WARPS_N = BN / WN;
const uint FRAGS_M = WM / TM;
const uint FRAGS_N = WN / TN;
const uint SUBGROUPS = (BM / WM) * (BN / WN);
shared float Cs[SUBGROUPS * TM * TN];  // per-subgroup staging of one fragment for edge tiles and alpha / beta
#endif

float a_at(uint base, uint row0, uint k0, uint e) {
    // Element e of the stored tile, in stored order.
    const uint r = e / A_COLS;
    const uint c = e % A_COLS;
    const uint gm = row0 + (TRANS_A ? c : r);
    const uint gk = k0 + (TRANS_A ? r : c);
    if (e >= BM * BK || gm >= p.M || gk >= p.K) {
        return 0.0;
    }
    return TRANS_A ? A[base + gk * p.lda + gm] : A[base + gm * p.lda + gk];
}

float b_at(uint base, uint col0, uint k0, uint e) {
    const uint r = e / B_COLS;
    const uint c = e % B_COLS;
    const uint gn = col0 + (TRANS_B ? r : c);
    const uint gk = k0 + (TRANS_B ? c : r);
    if (e >= BN * BK || gn >= p.N || gk >= p.K) {
        return 0.0;
    }
    return TRANS_B ? B[base + gn * p.ldb + gk] : B[base + gk * p.ldb + gn];
}

void main() {
    const uint tid = gl_LocalInvocationID.x;
    const uint tilesN = (p.N + BN - 1) / BN;
    const uint tilesM = (p.M + BM - 1) / BM;
    const uint tiles = tilesN * tilesM;
    const uint groups = gl_NumWorkGroups.x * gl_NumWorkGroups.y;
    const uint slices = (p.K + BK - 1) / BK;
    const int layoutA = TRANS_A ? gl_CooperativeMatrixLayoutColumnMajor : gl_CooperativeMatrixLayoutRowMajor;
    const int layoutB = TRANS_B ? gl_CooperativeMatrixLayoutColumnMajor : gl_CooperativeMatrixLayoutRowMajor;

    for (uint z = gl_WorkGroupID.z; z < p.batch; z += gl_NumWorkGroups.z) {
        const uint baseA = z * p.strideA;
        const uint baseB = z * p.strideB;
        const uint baseC = z * p.strideC;
        for (uint tile = gl_WorkGroupID.x + gl_WorkGroupID.y * gl_NumWorkGroups.x; tile < tiles; tile += groups) {
            const uint row0 = (tile / tilesN) * BM;
            const uint col0 = (tile % tilesN) * BN;

#ifdef COOPMAT2
            coopmat<float, gl_ScopeWorkgroup, BM, BN, gl_MatrixUseAccumulator> acc =
                coopmat<float, gl_ScopeWorkgroup, BM, BN, gl_MatrixUseAccumulator>(0.0);
#else
            const uint sg = gl_SubgroupID;
            const uint wm0 = (sg / WARPS_N) * WM;  // this subgroup's block inside the tile
            const uint wn0 = (sg % WARPS_N) * WN;
            coopmat<float, gl_ScopeSubgroup, TM, TN, gl_MatrixUseAccumulator> acc[FRAGS_M * FRAGS_N];
            [[unroll]] for (uint i = 0; i < FRAGS_M * FRAGS_N; ++i) {
                acc[i] = coopmat<float, gl_ScopeSubgroup, TM, TN, gl_MatrixUseAccumulator>(0.0);
            }
#endif

            float ra[A_PER_THREAD];
            float rb[B_PER_THREAD];
            [[unroll]] for (uint i = 0; i < A_PER_THREAD; ++i) { ra[i] = a_at(baseA, row0, 0, tid + i * THREADS); }
            [[unroll]] for (uint i = 0; i < B_PER_THREAD; ++i) { rb[i] = b_at(baseB, col0, 0, tid + i * THREADS); }
            barrier();  // the previous tile's last reads of buffer 0 are done
            [[unroll]] for (uint i = 0; i < A_PER_THREAD; ++i) {
                const uint e = tid + i * THREADS;
                if (e < BM * BK) { As[(e / A_COLS) * A_STRIDE + e % A_COLS] = to_operand(ra[i]); }
            }
            [[unroll]] for (uint i = 0; i < B_PER_THREAD; ++i) {
                const uint e = tid + i * THREADS;
                if (e < BN * BK) { Bs[(e / B_COLS) * B_STRIDE + e % B_COLS] = to_operand(rb[i]); }
            }
            barrier();

            for (uint s = 0; s < slices; ++s) {
                const uint cur = s & 1;
                const bool more = s + 1 < slices;
                if (more) {
                    const uint k1 = (s + 1) * BK;
                    [[unroll]] for (uint i = 0; i < A_PER_THREAD; ++i) { ra[i] = a_at(baseA, row0, k1, tid + i * THREADS); }
                    [[unroll]] for (uint i = 0; i < B_PER_THREAD; ++i) { rb[i] = b_at(baseB, col0, k1, tid + i * THREADS); }
                }

#ifdef COOPMAT2
                coopmat<OPERAND, gl_ScopeWorkgroup, BM, BK, gl_MatrixUseA> ma;
                coopmat<OPERAND, gl_ScopeWorkgroup, BK, BN, gl_MatrixUseB> mb;
                coopMatLoad(ma, As, cur * A_TILE, A_STRIDE, layoutA);
                coopMatLoad(mb, Bs, cur * B_TILE, B_STRIDE, layoutB);
                acc = coopMatMulAdd(ma, mb, acc);
#else
                [[unroll]] for (uint kk = 0; kk < BK; kk += TK) {
                    coopmat<OPERAND, gl_ScopeSubgroup, TM, TK, gl_MatrixUseA> ma[FRAGS_M];
                    [[unroll]] for (uint i = 0; i < FRAGS_M; ++i) {
                        const uint r = wm0 + i * TM;  // tile row of the fragment
                        const uint off = TRANS_A ? kk * A_STRIDE + r : r * A_STRIDE + kk;
                        coopMatLoad(ma[i], As, cur * A_TILE + off, A_STRIDE, layoutA);
                    }
                    [[unroll]] for (uint j = 0; j < FRAGS_N; ++j) {
                        const uint c = wn0 + j * TN;
                        const uint off = TRANS_B ? c * B_STRIDE + kk : kk * B_STRIDE + c;
                        coopmat<OPERAND, gl_ScopeSubgroup, TK, TN, gl_MatrixUseB> mb;
                        coopMatLoad(mb, Bs, cur * B_TILE + off, B_STRIDE, layoutB);
                        [[unroll]] for (uint i = 0; i < FRAGS_M; ++i) {
                            acc[i * FRAGS_N + j] = coopMatMulAdd(ma[i], mb, acc[i * FRAGS_N + j]);
                        }
                    }
                }
#endif

                if (more) {
                    const uint nxt = cur ^ 1;
                    [[unroll]] for (uint i = 0; i < A_PER_THREAD; ++i) {
                        const uint e = tid + i * THREADS;
                        if (e < BM * BK) { As[nxt * A_TILE + (e / A_COLS) * A_STRIDE + e % A_COLS] = to_operand(ra[i]); }
                    }
                    [[unroll]] for (uint i = 0; i < B_PER_THREAD; ++i) {
                        const uint e = tid + i * THREADS;
                        if (e < BN * BK) { Bs[nxt * B_TILE + (e / B_COLS) * B_STRIDE + e % B_COLS] = to_operand(rb[i]); }
                    }
                }
                barrier();
            }

#ifdef COOPMAT2
            // Clamped layouts drop out-of-range stores and read C only inside the matrix.
            tensorLayoutNV<2, gl_CooperativeMatrixClampModeConstantNV> lc = createTensorLayoutNV(2, gl_CooperativeMatrixClampModeConstantNV);
            lc = setTensorLayoutDimensionNV(lc, p.M, p.N);
            lc = setTensorLayoutStrideNV(lc, p.ldc, 1);
            acc = acc * p.alpha;
            if (p.beta != 0.0) {
                coopmat<float, gl_ScopeWorkgroup, BM, BN, gl_MatrixUseAccumulator> old;
                coopMatLoadTensorNV(old, C, baseC, sliceTensorLayoutNV(lc, row0, BM, col0, BN));
                acc = acc + old * p.beta;
            }
            coopMatStoreTensorNV(acc, C, baseC, sliceTensorLayoutNV(lc, row0, BM, col0, BN));
#else
            const bool plain = p.alpha == 1.0 && p.beta == 0.0;
            const uint lane = gl_SubgroupInvocationID;
            [[unroll]] for (uint i = 0; i < FRAGS_M; ++i) {
                [[unroll]] for (uint j = 0; j < FRAGS_N; ++j) {
                    const uint gr = row0 + wm0 + i * TM;
                    const uint gc = col0 + wn0 + j * TN;
                    if (plain && gr + TM <= p.M && gc + TN <= p.N) {
                        coopMatStore(acc[i * FRAGS_N + j], C, baseC + gr * p.ldc + gc, p.ldc, gl_CooperativeMatrixLayoutRowMajor);
                        continue;
                    }
                    // Edge fragment or alpha / beta: through this subgroup's staging area, element by element.
                    coopMatStore(acc[i * FRAGS_N + j], Cs, sg * TM * TN, TN, gl_CooperativeMatrixLayoutRowMajor);
                    subgroupMemoryBarrierShared();
                    subgroupBarrier();
                    for (uint e = lane; e < TM * TN; e += gl_SubgroupSize) {
                        const uint r = gr + e / TN;
                        const uint c = gc + e % TN;
                        if (r < p.M && c < p.N) {
                            const uint at = baseC + r * p.ldc + c;
                            const float v = p.alpha * Cs[sg * TM * TN + e];
                            C[at] = p.beta == 0.0 ? v : v + p.beta * C[at];
                        }
                    }
                    subgroupMemoryBarrierShared();
                    subgroupBarrier();
                }
            }
#endif
        }
    }
}
