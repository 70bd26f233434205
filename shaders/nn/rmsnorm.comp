#version 450
// RMSNorm, optionally gated, over groups of a row (mamba_ssm's RMSNormGated / rms_norm_ref; plain RMSNorm without z):
//   h = x * silu(z) when the gate comes first (norm_before_gate = false), else h = x
//   r = 1 / sqrt(mean_{group}(h^2) + eps) ;  n = h r
//   y = n * w  (* silu(z) when the gate comes after the norm)
// One workgroup per (row, group), a fixed-order tree for the sum of squares; r is saved for the backward. z is read in
// place from columns [z_col, z_col + dim) of rows z_stride apart (the fused projection's output, not a split copy).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;   // a power of two

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer Z { float z[]; };
layout(std430, binding = 2) readonly buffer W { float w[]; };
layout(std430, binding = 3) writeonly buffer Y { float y[]; };
layout(std430, binding = 4) writeonly buffer Rstd { float rstd[]; };   // (rows, groups)

layout(push_constant) uniform Push {
    uint rows, dim, group_size;
    uint flags;   // bit 0: z given, bit 1: gate after the norm
    float eps;
    uint z_stride, z_col;
} p;

shared float red[gl_WorkGroupSize.x];

void main() {
    const uint tid = gl_LocalInvocationID.x;
    const uint groups = p.dim / p.group_size;
    const bool gated = (p.flags & 1u) != 0u;
    const bool after = (p.flags & 2u) != 0u;
    for (uint item = gl_WorkGroupID.x; item < p.rows * groups; item += gl_NumWorkGroups.x) {
        const uint base = (item / groups) * p.dim + (item % groups) * p.group_size;
        const uint zbase = (item / groups) * p.z_stride + p.z_col + (item % groups) * p.group_size;
        float ss = 0.0;
        for (uint j = tid; j < p.group_size; j += gl_WorkGroupSize.x) {
            float h = x[base + j];
            if (gated && !after) {
                h *= silu(z[zbase + j]);
            }
            ss = fma(h, h, ss);
        }
        red[tid] = ss;
        barrier();
        for (uint half_ = gl_WorkGroupSize.x / 2; half_ > 0; half_ >>= 1) {
            if (tid < half_) {
                red[tid] += red[tid + half_];
            }
            barrier();
        }
        const float r = inversesqrt(red[0] / float(p.group_size) + p.eps);
        barrier();
        for (uint j = tid; j < p.group_size; j += gl_WorkGroupSize.x) {
            const uint o = base + j;
            float h = x[o];
            if (gated && !after) {
                h *= silu(z[zbase + j]);
            }
            float v = h * r * w[o % p.dim];
            if (gated && after) {
                v *= silu(z[zbase + j]);
            }
            y[o] = v;
        }
        if (tid == 0) {
            rstd[item] = r;
        }
    }
}
