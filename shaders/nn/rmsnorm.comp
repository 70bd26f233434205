#version 450
// RMSNorm, optionally gated, over groups of a row (mamba_ssm's RMSNormGated / rms_norm_ref; plain RMSNorm without z):
//   h = x * silu(z) when the gate comes first (norm_before_gate = false), else h = x
//   r = 1 / sqrt(mean_{group}(h^2) + eps) ;  n = h r
//   y = n * w  (* silu(z) when the gate comes after the norm)
// One workgroup per (row, group). Each invocation holds PER elements of the group in registers, so x and z are read
// once; the sum of squares is row_sum's fixed order; r is saved for the backward. z is read in place from columns
// [z_col, z_col + dim) of rows z_stride apart (the fused projection's output, not a split copy).
// PACK: y is written as the operands a tensor-core product reads (Gemm's packed operand: two to a word), not as
// fp32, so that no pass reads y to convert it: 1 bf16 (rounded to nearest even); 2 f16 and 3 bf16 values as f16
// (as nn/to_operand16.comp forms them), times the power of two of a bound on |y| known before any row is read, for
// the plain norm (no z) alone: |h_i| r <= sqrt(group_size), so |y_i| <= sqrt(group_size) max|w|. That bound's bits
// are the operand's scale word (absmax_out[0], as nn/absmax.comp's max would be). f16 rounds each value as any power
// of two in its normal range would, so the products are the bits the absmax scale gives, but for values under 2^-28
// times the bound (f16 subnormals). Each invocation holds pairs of neighbouring elements (PER even), so that a
// word's two halves are its own.
// FORM bit 2: the norm's input is x + res, written to sum (a block's norm in the residual stream forms the stream's
// next value as it reads its two terms: no pass adds them first).
// FOLD_ABSMAX: the largest |y| also goes into absmax_out[0] (fold_absmax.glsl), for y's f16 tensor-core operands.
// QUADS: each invocation holds runs of four neighbouring elements and moves each run in one 16-byte access (8 for
// bf16): a quarter of the memory instructions, four times the bytes each has in flight. The host sets it where every
// row start, stride and column it binds is a multiple of four elements and every binding is 16-byte aligned.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"

layout(local_size_x_id = 0) in;   // a power of two
layout(constant_id = 1) const uint PER = 1;   // elements per invocation: ceil(group_size / workgroup size)
layout(constant_id = 2) const uint PACK = 0;   // (PER even, dim and group_size even)
layout(constant_id = 3) const bool QUADS = false;       // (PER, dim, group_size, z_stride, z_col multiples of 4)
layout(constant_id = 4) const bool FOLD_ABSMAX = false; // (fp32 y)
// FORM bit 0: z given, bit 1: the gate after the norm, bit 2: the input is x + res (written to sum). A constant, not a
// push flag, so that each form's pipeline holds only its own operands and arithmetic.
layout(constant_id = 5) const uint FORM = 0;
const bool gated = (FORM & 1u) != 0u;
const bool after = (FORM & 2u) != 0u;
const bool residual = (FORM & 4u) != 0u;

// x is bf16 in the TENSORS_BF16 variants (the SSD's y on bf16 tensors), z in the IN_BF16 ones (the fused
// projection's output in bf16).
#include "tensor_elems.glsl"
layout(std430, binding = 0) readonly buffer X { TENSOR_ELEM x[]; };
layout(std430, binding = 1) readonly buffer Z { IN_ELEM z[]; };
layout(std430, binding = 2) readonly buffer W { float w[]; };
layout(std430, binding = 3) writeonly buffer Y { float y[]; };
layout(std430, binding = 3) writeonly buffer YWords { uint y_words[]; };   // PACK
layout(std430, binding = 4) writeonly buffer Rstd { float rstd[]; };   // (rows, groups)
layout(std430, binding = 5) readonly buffer Res { float res[]; };      // FORM bit 2: x's shape
layout(std430, binding = 6) writeonly buffer Sum { float sum_out[]; }; // FORM bit 2: x + res
layout(std430, binding = 7) buffer AbsMax { uint absmax_out[]; };      // FOLD_ABSMAX; PACK 1-3: the scale word
// The same bindings four elements at a time (QUADS).
layout(std430, binding = 0) readonly buffer X4 { TENSOR_WORD4 x4[]; };
layout(std430, binding = 1) readonly buffer Z4 { IN_WORD4 z4[]; };
layout(std430, binding = 2) readonly buffer W4 { vec4 w4[]; };
layout(std430, binding = 3) writeonly buffer Y4 { vec4 y4[]; };
layout(std430, binding = 3) writeonly buffer YWords2 { uvec2 y_words2[]; };
layout(std430, binding = 5) readonly buffer Res4 { vec4 res4[]; };
layout(std430, binding = 6) writeonly buffer Sum4 { vec4 sum4[]; };

layout(push_constant) uniform Push {
    uint rows, dim, group_size;
    float eps;
    uint z_stride, z_col;
} p;

#include "row_sum.glsl"
#include "bf16_bits.glsl"
#include "fold_absmax.glsl"
#include "operand_scale.glsl"

// PACK 2 and 3: the scale of the bound sqrt(group_size) max|w| (every workgroup finds the same; the first also
// stores its bits as the operand's scale word). Every invocation calls it, first (row_sum's barriers then come
// before fold_absmax's use of the same shared word).
float bound_scale() {
    uint m = 0u;
    for (uint c = gl_LocalInvocationID.x; c < p.dim; c += gl_WorkGroupSize.x) {
        m = fold_value(m, w[c]);
    }
    const uint bits = floatBitsToUint(uintBitsToFloat(workgroup_max(m)) * sqrt(float(p.group_size)));
    if (gl_WorkGroupID.x == 0 && gl_LocalInvocationIndex == 0) {
        absmax_out[0] = bits;
    }
    return operand_scale(bits);
}

// Two neighbours as one operand word (PACK 1-3).
uint pack_pair(float a, float b, float scale) {
    if (PACK == 1) {
        return bf16_bits(a) | (bf16_bits(b) << 16);
    }
    const vec2 v = vec2(a, b);
    return packHalf2x16(scale * (PACK == 3 ? bf16_round(v) : v));
}

// The group's element an invocation holds e-th: strided by the workgroup, or in runs of neighbours (quads, or pairs
// when packing).
uint element(uint tid, uint e) {
    const uint run = QUADS ? 4 : PACK != 0 ? 2 : 1;
    return run * (tid + (e / run) * gl_WorkGroupSize.x) + e % run;
}

void main() {
    const uint tid = gl_LocalInvocationID.x;
    const uint groups = p.dim / p.group_size;
    const float scale = PACK >= 2 ? bound_scale() : 1.0;
    if (PACK == 1 && gl_WorkGroupID.x == 0 && tid == 0) {
        absmax_out[0] = 0u;   // bf16 operands: the scale word of 1 (no fill for the caller to record)
    }
    uint largest = 0u;
    for (uint item = gl_WorkGroupID.x; item < p.rows * groups; item += gl_NumWorkGroups.x) {
        const uint col = (item % groups) * p.group_size;
        const uint base = (item / groups) * p.dim + col;
        const uint zbase = (item / groups) * p.z_stride + p.z_col + col;
        float hv[PER];
        float zv[PER];
        if (QUADS) {
            [[unroll]] for (uint q = 0; q < PER / 4; ++q) {
                const uint j = element(tid, 4 * q);   // j + 3 is inside the group whenever j is
                vec4 h = vec4(0.0);
                vec4 g = vec4(0.0);
                if (j < p.group_size) {
                    h = TENSOR_LOAD4(x4, (base + j) / 4);
                    if (residual) {
                        h += res4[(base + j) / 4];
                        sum4[(base + j) / 4] = h;
                    }
                    if (gated) {
                        g = IN_LOAD4(z4, (zbase + j) / 4);
                    }
                }
                [[unroll]] for (uint k = 0; k < 4; ++k) {
                    hv[4 * q + k] = h[k];
                    zv[4 * q + k] = g[k];
                }
            }
        } else {
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
                }
            }
        }
        float ss = 0.0;
        [[unroll]] for (uint e = 0; e < PER; ++e) {
            if (element(tid, e) < p.group_size) {
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
                yv[e] = hv[e] * r * (QUADS ? w4[(col + j) / 4][e % 4] : w[col + j]);
                if (gated && after) {
                    yv[e] *= silu(zv[e]);
                }
            }
            largest = fold_value(largest, yv[e]);
        }
        if (QUADS) {
            [[unroll]] for (uint q = 0; q < PER / 4; ++q) {
                const uint j = element(tid, 4 * q);
                if (j < p.group_size) {
                    const vec4 v = vec4(yv[4 * q], yv[4 * q + 1], yv[4 * q + 2], yv[4 * q + 3]);
                    if (PACK == 1) {
                        y_words2[(base + j) / 4] = bf16_words4(v);
                    } else if (PACK != 0) {
                        y_words2[(base + j) / 4] = uvec2(pack_pair(v.x, v.y, scale), pack_pair(v.z, v.w, scale));
                    } else {
                        y4[(base + j) / 4] = v;
                    }
                }
            }
        } else if (PACK != 0) {
            [[unroll]] for (uint e = 0; e < PER; e += 2) {
                const uint j = element(tid, e);   // even: j + 1 is inside the group whenever j is
                if (j < p.group_size) {
                    y_words[(base + j) / 2] = pack_pair(yv[e], yv[e + 1], scale);
                }
            }
        } else {
            [[unroll]] for (uint e = 0; e < PER; ++e) {
                const uint j = element(tid, e);
                if (j < p.group_size) {
                    y[base + j] = yv[e];
                }
            }
        }
        if (tid == 0) {
            rstd[item] = r;
        }
    }
    fold_absmax(largest);
}
