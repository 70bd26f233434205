#version 450
// Backward of rmsnorm.comp from the saved r. With s = silu(z), per (row, group), n = h r:
//   gate first:  dn = dy w            dh = r (dn - n mean(dn n))    dx = dh s    dz = dh x silu'(z)
//   gate after:  dn = dy w s          dx = r (dn - n mean(dn n))                dz = dy n w silu'(z)
//   dw[c] = sum over rows of dy n (times s when the gate comes after)
// MODE 0: one workgroup per (row, group) for dx and dz; MODE 1: per block of rows and channel, partial sums of dw
// that the host adds in a fixed order. z and dz are in place in columns [z_col, z_col + dim) and [dz_col, dz_col + dim)
// of rows z_stride and dz_stride apart (the fused projection's output and its gradient, not split copies).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint MODE = 0;

layout(std430, binding = 0) readonly buffer Dy { float dy[]; };
layout(std430, binding = 1) readonly buffer X { float x[]; };
layout(std430, binding = 2) readonly buffer Z { float z[]; };
layout(std430, binding = 3) readonly buffer W { float w[]; };
layout(std430, binding = 4) readonly buffer Rstd { float rstd[]; };
layout(std430, binding = 5) writeonly buffer Dx { float dx[]; };
layout(std430, binding = 6) writeonly buffer Dz { float dz[]; };
layout(std430, binding = 7) writeonly buffer DwPart { float dw_part[]; };   // (blocks, dim)

layout(push_constant) uniform Push {
    uint rows, dim, group_size;
    uint flags;   // bit 0: z given, bit 1: gate after the norm
    uint block_rows;
    uint z_stride, z_col, dz_stride, dz_col;
} p;

shared float red[gl_WorkGroupSize.x];

float sigmoid(float v) {
    return 1.0 / (1.0 + exp(-v));
}

void main() {
    const uint tid = gl_LocalInvocationID.x;
    const uint groups = p.dim / p.group_size;
    const bool gated = (p.flags & 1u) != 0u;
    const bool after = (p.flags & 2u) != 0u;
    if (MODE == 1) {
        const uint blocks = (p.rows + p.block_rows - 1) / p.block_rows;
        GRID_STRIDE_LOOP(e, blocks * p.dim) {
            const uint c = e % p.dim;
            const uint blk = e / p.dim;
            const uint r1 = min(blk * p.block_rows + p.block_rows, p.rows);
            float acc = 0.0;
            for (uint row = blk * p.block_rows; row < r1; ++row) {
                const uint o = row * p.dim + c;
                const uint zo = row * p.z_stride + p.z_col + c;
                float h = x[o];
                if (gated && !after) {
                    h *= silu(z[zo]);
                }
                float v = dy[o] * h * rstd[row * groups + c / p.group_size];
                if (gated && after) {
                    v *= silu(z[zo]);
                }
                acc += v;
            }
            dw_part[e] = acc;
        }
        return;
    }
    for (uint item = gl_WorkGroupID.x; item < p.rows * groups; item += gl_NumWorkGroups.x) {
        const uint base = (item / groups) * p.dim + (item % groups) * p.group_size;
        const uint zbase = (item / groups) * p.z_stride + p.z_col + (item % groups) * p.group_size;
        const uint dzbase = (item / groups) * p.dz_stride + p.dz_col + (item % groups) * p.group_size;
        const float r = rstd[item];
        float dot = 0.0;
        for (uint j = tid; j < p.group_size; j += gl_WorkGroupSize.x) {
            const uint o = base + j;
            const float s = gated ? silu(z[zbase + j]) : 1.0;
            const float h = gated && !after ? x[o] * s : x[o];
            const float dn = dy[o] * w[o % p.dim] * (gated && after ? s : 1.0);
            dot = fma(dn, h * r, dot);
        }
        red[tid] = dot;
        barrier();
        for (uint half_ = gl_WorkGroupSize.x / 2; half_ > 0; half_ >>= 1) {
            if (tid < half_) {
                red[tid] += red[tid + half_];
            }
            barrier();
        }
        const float mean = red[0] / float(p.group_size);
        barrier();
        for (uint j = tid; j < p.group_size; j += gl_WorkGroupSize.x) {
            const uint o = base + j;
            const float zv = gated ? z[zbase + j] : 0.0;
            const float sg = sigmoid(zv);
            const float s = gated ? zv * sg : 1.0;
            const float ds = sg * (1.0 + zv * (1.0 - sg));   // silu'(z)
            const float h = gated && !after ? x[o] * s : x[o];
            const float n = h * r;
            const float dn = dy[o] * w[o % p.dim] * (gated && after ? s : 1.0);
            const float dh = r * (dn - n * mean);
            if (gated && !after) {
                dx[o] = dh * s;
                dz[dzbase + j] = dh * x[o] * ds;
            } else {
                dx[o] = dh;
                if (gated) {
                    dz[dzbase + j] = dy[o] * n * w[o % p.dim] * ds;
                }
            }
        }
    }
}
