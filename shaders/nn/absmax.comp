#version 450
// The largest |x| of a tensor, as float bits (non-negative floats order as their bits), folded into
// result[slot] with atomicMax: the scale of a tensor's 16-bit tensor-core operands (nn/to_operand16.comp).
// The host zeroes the result first.
layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer Src { float src[]; };
layout(std430, binding = 1) buffer Result { uint result[]; };

layout(push_constant) uniform Push {
    uint count;
    uint slot;
} p;

shared uint partial[gl_WorkGroupSize.x];

void main() {
    uint m = 0;
    for (uint i = gl_GlobalInvocationID.x; i < p.count; i += gl_NumWorkGroups.x * gl_WorkGroupSize.x) {
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
