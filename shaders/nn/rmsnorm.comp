#version 450
// RMSNorm, optionally gated, over groups of a row (mamba_ssm's RMSNormGated / rms_norm_ref; plain RMSNorm without z):
//   h = x * silu(z) when the gate comes first (norm_before_gate = false), else h = x
//   r = 1 / sqrt(mean_{group}(h^2) + eps) ;  n = h r
//   y = n * w  (* silu(z) when the gate comes after the norm)
// One workgroup per (row, group). Each invocation holds PER elements of the group in registers, so x and z are read
// once; the sum of squares is row_sum's fixed order; r is saved for the backward. z is read in place from columns
// [z_col, z_col + dim) of rows z_stride apart (the fused projection's output, not a split copy).
// PACK_BF16: y is written as the bf16 operands a tensor-core product reads (Gemm's packed operand: two to a word,
// rounded to nearest even), not as fp32, so that no pass reads y to convert it. Each invocation then holds pairs of
// neighbouring elements (PER even), so that a word's two halves are its own.
// flags bit 2: the norm's input is x + res, written to sum (a block's norm in the residual stream forms the stream's
// next value as it reads its two terms: no pass adds them first).
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"

layout(local_size_x_id = 0) in;   // a power of two
layout(constant_id = 1) const uint PER = 1;   // elements per invocation: ceil(group_size / workgroup size)
layout(constant_id = 2) const bool PACK_BF16 = false;   // (PER even, dim and group_size even)

// x is bf16 in the TENSORS_BF16 variants (the SSD's y on bf16 tensors), z in the IN_BF16 ones (the fused
// projection's output in bf16).
#include "tensor_elems.glsl"
layout(std430, binding = 0) readonly buffer X { TENSOR_ELEM x[]; };
layout(std430, binding = 1) readonly buffer Z { IN_ELEM z[]; };
layout(std430, binding = 2) readonly buffer W { float w[]; };
layout(std430, binding = 3) writeonly buffer Y { float y[]; };
layout(std430, binding = 3) writeonly buffer YWords { uint y_words[]; };   // PACK_BF16
layout(std430, binding = 4) writeonly buffer Rstd { float rstd[]; };   // (rows, groups)
layout(std430, binding = 5) readonly buffer Res { float res[]; };      // flags bit 2: x's shape
layout(std430, binding = 6) writeonly buffer Sum { float sum_out[]; }; // flags bit 2: x + res

layout(push_constant) uniform Push {
    uint rows, dim, group_size;
    uint flags;   // bit 0: z given, bit 1: gate after the norm, bit 2: the input is x + res (written to sum)
    float eps;
    uint z_stride, z_col;
} p;

#include "row_sum.glsl"
#include "bf16_bits.glsl"

// The group's element an invocation holds e-th: strided by the workgroup, or in neighbouring pairs when packing.
uint element(uint tid, uint e) {
    return PACK_BF16 ? 2 * (tid + (e / 2) * gl_WorkGroupSize.x) + e % 2 : tid + e * gl_WorkGroupSize.x;
}

void main() {
    const uint tid = gl_LocalInvocationID.x;
    const uint groups = p.dim / p.group_size;
    const bool gated = (p.flags & 1u) != 0u;
    const bool after = (p.flags & 2u) != 0u;
    const bool residual = (p.flags & 4u) != 0u;
    for (uint item = gl_WorkGroupID.x; item < p.rows * groups; item += gl_NumWorkGroups.x) {
        const uint col = (item % groups) * p.group_size;
        const uint base = (item / groups) * p.dim + col;
        const uint zbase = (item / groups) * p.z_stride + p.z_col + col;
        float hv[PER];
        float zv[PER];
        float ss = 0.0;
        [[unroll]] for (uint e = 0; e < PER; ++e) {
            const uint j = element(tid, e);
            hv[e] = 0.0;
            zv[e] = 0.0;
            if (j < p.group_size) {
                hv[e] = TENSOR_LOAD(x, base + j);
                if (residual) {
                    hv[e] += res[base + j];
                    sum_out[base + j] = hv[e];
                }
                if (gated) {
                    zv[e] = IN_LOAD(z, zbase + j);
                }
                if (gated && !after) {
                    hv[e] *= silu(zv[e]);
                }
                ss = fma(hv[e], hv[e], ss);
            }
        }
        const float r = inversesqrt(row_sum(ss) / float(p.group_size) + p.eps);
        float yv[PER];
        [[unroll]] for (uint e = 0; e < PER; ++e) {
            const uint j = element(tid, e);
            yv[e] = 0.0;
            if (j < p.group_size) {
                yv[e] = hv[e] * r * w[col + j];
                if (gated && after) {
                    yv[e] *= silu(zv[e]);
                }
                if (!PACK_BF16) {
                    y[base + j] = yv[e];
                }
            }
        }
        if (PACK_BF16) {
            [[unroll]] for (uint e = 0; e < PER; e += 2) {
                const uint j = element(tid, e);   // even: j + 1 is inside the group whenever j is
                if (j < p.group_size) {
                    y_words[(base + j) / 2] = bf16_bits(yv[e]) | (bf16_bits(yv[e + 1]) << 16);
                }
            }
        }
        if (tid == 0) {
            rstd[item] = r;
        }
    }
}
