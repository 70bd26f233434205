#version 450
// The largest |x| of a tensor, as float bits (non-negative floats order as their bits), folded into
// absmax_out[slot] with atomicMax: the scale of a tensor's 16-bit tensor-core operands (nn/to_operand16.comp).
// The host zeroes the word first. A few workgroups (one atomic each, fold_absmax.glsl) walk the tensor with a stride,
// each invocation issuing STEP loads before it uses them: one load in flight per invocation leaves the walk latency
// bound. Kernels that write a tensor can fold its max as they go instead (FOLD_ABSMAX), so that no pass reads it.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer Src { float src[]; };
layout(std430, binding = 1) buffer Result { uint absmax_out[]; };

layout(push_constant) uniform Push {
    uint count;
    uint slot;
} p;

const bool FOLD_ABSMAX = true;
#define FOLD_SLOT p.slot
#include "fold_absmax.glsl"

const uint STEP = 4;

void main() {
    const uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    uint m = 0;
    uint i = gl_GlobalInvocationID.x;
    for (; i + (STEP - 1) * stride < p.count; i += STEP * stride) {
        float v[STEP];
        [[unroll]] for (uint k = 0; k < STEP; ++k) {
            v[k] = src[i + k * stride];
        }
        [[unroll]] for (uint k = 0; k < STEP; ++k) {
            m = fold_value(m, v[k]);
        }
    }
    for (; i < p.count; i += stride) {
        m = fold_value(m, src[i]);
    }
    fold_absmax(m);
}
