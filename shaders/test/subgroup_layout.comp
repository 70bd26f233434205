#version 450
// Runtime test kernel, built as SPIR-V 1.6 (a variant) where a driver may vary the subgroup size: each invocation of
// one workgroup writes the subgroup size, the subgroup count, its subgroup and its lane, so a test can check the
// layout the host sized the workgroup for.
#extension GL_KHR_shader_subgroup_basic : require

layout(local_size_x_id = 0) in;

layout(std430, binding = 0) writeonly buffer Layout { uint v[]; };

void main() {
    const uint i = 4 * gl_LocalInvocationID.x;
    v[i] = gl_SubgroupSize;
    v[i + 1] = gl_NumSubgroups;
    v[i + 2] = gl_SubgroupID;
    v[i + 3] = gl_SubgroupInvocationID;
}
