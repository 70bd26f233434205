#version 450
// The copy ceiling as kernels see it: out = in, 16-byte loads and stores, neighbouring invocations on neighbouring
// vectors (vkCmdCopyBuffer is measured too: on some drivers it takes a slower path than a shader).
layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer In { vec4 inv[]; };
layout(std430, binding = 1) writeonly buffer Out { vec4 outv[]; };

layout(push_constant) uniform Push {
    uint n;   // vec4 count
} p;

void main() {
    const uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    for (uint i = gl_GlobalInvocationID.x; i < p.n; i += stride) {
        outv[i] = inv[i];
    }
}
