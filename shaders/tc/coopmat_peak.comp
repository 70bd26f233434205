#version 450
// The tensor-core ceiling: each subgroup runs eight independent chains of cooperative-matrix multiply-adds on
// fragments of a shape the device lists (enough in flight to hide the latency), no memory traffic but one store of
// their sum. A and B hold the push constant's value, so nothing is known when the shader is compiled, and the host
// checks the sums: a device that skipped work would not get them.
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

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint TM = 16;
layout(constant_id = 2) const uint TN = 16;
layout(constant_id = 3) const uint TK = 16;
const uint CHAINS = 8;

layout(std430, binding = 0) writeonly buffer Out { float outv[]; };

layout(push_constant) uniform Push {
    uint iterations;
    float value;
} p;

void main() {
    const coopmat<OPERAND, gl_ScopeSubgroup, TM, TK, gl_MatrixUseA> a = coopmat<OPERAND, gl_ScopeSubgroup, TM, TK, gl_MatrixUseA>(OPERAND(p.value));
    const coopmat<OPERAND, gl_ScopeSubgroup, TK, TN, gl_MatrixUseB> b = coopmat<OPERAND, gl_ScopeSubgroup, TK, TN, gl_MatrixUseB>(OPERAND(p.value));
    coopmat<float, gl_ScopeSubgroup, TM, TN, gl_MatrixUseAccumulator> acc[CHAINS];
    [[unroll]] for (uint k = 0; k < CHAINS; ++k) {
        acc[k] = coopmat<float, gl_ScopeSubgroup, TM, TN, gl_MatrixUseAccumulator>(float(k));
    }
    for (uint it = 0; it < p.iterations; ++it) {
        [[unroll]] for (uint k = 0; k < CHAINS; ++k) {
            acc[k] = coopMatMulAdd(a, b, acc[k]);
        }
    }
    [[unroll]] for (uint k = 1; k < CHAINS; ++k) {
        acc[0] = acc[0] + acc[k];
    }
    const uint subgroup = gl_WorkGroupID.x * gl_NumSubgroups + gl_SubgroupID;
    coopMatStore(acc[0], outv, subgroup * TM * TN, TN, gl_CooperativeMatrixLayoutRowMajor);
}
