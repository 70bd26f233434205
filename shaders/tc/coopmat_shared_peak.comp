#version 450
// Tensor cores fed from shared memory: the inner loop of a GEMM that stages its operands in shared memory, without
// the global loads. The workgroup is a GM x GN grid of subgroups; each owns FM x FN accumulators of a shape the
// device lists and, per K slice of BK, waits on a barrier, then loads its FM A and FN B fragments of each TK step
// from the slice's shared tiles and multiplies them. This is the ceiling of any kernel built that way with that
// block, below the register-fed one of coopmat_peak.comp by what the fragment loads and the barrier cost.
// The tiles hold the push constant's value and the host checks the sum of the accumulators.
#extension GL_EXT_control_flow_attributes : require
#extension GL_KHR_cooperative_matrix : require
#extension GL_KHR_memory_scope_semantics : require
#extension GL_KHR_shader_subgroup_basic : require
#extension GL_EXT_shader_explicit_arithmetic_types_float16 : require
#ifdef OPERAND_BF16
#extension GL_EXT_bfloat16 : require
#define OPERAND bfloat16_t
#else
#define OPERAND float16_t
#endif

layout(local_size_x_id = 0) in;             // GM * GN subgroups
layout(constant_id = 1) const uint TM = 16;
layout(constant_id = 2) const uint TN = 16;
layout(constant_id = 3) const uint TK = 16;
layout(constant_id = 4) const uint FM = 4;  // fragments per subgroup along M and N
layout(constant_id = 5) const uint FN = 4;
layout(constant_id = 6) const uint GM = 2;  // subgroups along M and N
layout(constant_id = 7) const uint GN = 4;
layout(constant_id = 8) const uint BK = 32;
layout(constant_id = 9) const uint BUFFERS = 2;   // slices alternate between this many tiles (double buffering)

const uint PAD = 8;                          // operands per row: breaks bank conflicts between rows, as the GEMM does
const uint A_STRIDE = BK + PAD;              // A tile: GM FM TM rows of BK
const uint B_STRIDE = GN * FN * TN + PAD;    // B tile: BK rows of GN FN TN
const uint A_TILE = GM * FM * TM * A_STRIDE;
const uint B_TILE = BK * B_STRIDE;
shared OPERAND As[BUFFERS * A_TILE];
shared OPERAND Bs[BUFFERS * B_TILE];

layout(std430, binding = 0) writeonly buffer Out { float outv[]; };

layout(push_constant) uniform Push {
    uint iterations;                         // K slices
    float value;
} p;

void main() {
    const uint threads = gl_WorkGroupSize.x;
    for (uint i = gl_LocalInvocationID.x; i < BUFFERS * A_TILE; i += threads) {
        As[i] = OPERAND(p.value);
    }
    for (uint i = gl_LocalInvocationID.x; i < BUFFERS * B_TILE; i += threads) {
        Bs[i] = OPERAND(p.value);
    }

    const uint sg = gl_SubgroupID;
    const uint m0 = (sg / GN) * FM * TM;
    const uint n0 = (sg % GN) * FN * TN;
    coopmat<float, gl_ScopeSubgroup, TM, TN, gl_MatrixUseAccumulator> acc[FM * FN];
    [[unroll]] for (uint i = 0; i < FM * FN; ++i) {
        acc[i] = coopmat<float, gl_ScopeSubgroup, TM, TN, gl_MatrixUseAccumulator>(0.0);
    }
    for (uint it = 0; it < p.iterations; ++it) {
        barrier();   // as a GEMM's slice waits for its staging
        const uint a0 = (it % BUFFERS) * A_TILE;
        const uint b0 = (it % BUFFERS) * B_TILE;
        [[unroll]] for (uint k = 0; k < BK; k += TK) {
            coopmat<OPERAND, gl_ScopeSubgroup, TM, TK, gl_MatrixUseA> a[FM];
            coopmat<OPERAND, gl_ScopeSubgroup, TK, TN, gl_MatrixUseB> b[FN];
            [[unroll]] for (uint i = 0; i < FM; ++i) {
                coopMatLoad(a[i], As, a0 + (m0 + i * TM) * A_STRIDE + k, A_STRIDE, gl_CooperativeMatrixLayoutRowMajor);
            }
            [[unroll]] for (uint j = 0; j < FN; ++j) {
                coopMatLoad(b[j], Bs, b0 + k * B_STRIDE + n0 + j * TN, B_STRIDE, gl_CooperativeMatrixLayoutRowMajor);
            }
            [[unroll]] for (uint i = 0; i < FM; ++i) {
                [[unroll]] for (uint j = 0; j < FN; ++j) {
                    acc[i * FN + j] = coopMatMulAdd(a[i], b[j], acc[i * FN + j]);
                }
            }
        }
    }
    [[unroll]] for (uint i = 1; i < FM * FN; ++i) {
        acc[0] = acc[0] + acc[i];
    }
    const uint subgroup = gl_WorkGroupID.x * gl_NumSubgroups + sg;
    coopMatStore(acc[0], outv, subgroup * TM * TN, TN, gl_CooperativeMatrixLayoutRowMajor);
}
