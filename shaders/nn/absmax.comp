#version 450
// The largest |x| of a tensor, as float bits (non-negative floats order as their bits), folded into
// result[slot] with atomicMax: the scale of a tensor's 16-bit tensor-core operands (nn/to_operand16.comp).
// The host zeroes the result first. A few workgroups (one atomic each) walk the tensor with a stride, each invocation
// issuing STEP loads before it uses them: one load in flight per invocation leaves the walk latency bound.
#extension GL_EXT_control_flow_attributes : require
layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer Src { float src[]; };
layout(std430, binding = 1) buffer Result { uint result[]; };

layout(push_constant) uniform Push {
    uint count;
    uint slot;
} p;

shared uint partial[gl_WorkGroupSize.x];

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
            m = max(m, floatBitsToUint(abs(v[k])));
        }
    }
    for (; i < p.count; i += stride) {
        m = max(m, floatBitsToUint(abs(src[i])));
    }
    partial[gl_LocalInvocationID.x] = m;
    barrier();
    for (uint half_ = gl_WorkGroupSize.x / 2; half_ > 0; half_ /= 2) {
        if (gl_LocalInvocationID.x < half_) {
            partial[gl_LocalInvocationID.x] = max(partial[gl_LocalInvocationID.x], partial[gl_LocalInvocationID.x + half_]);
        }
        barrier();
    }
    if (gl_LocalInvocationID.x == 0) {
        atomicMax(result[p.slot], partial[0]);
    }
}
