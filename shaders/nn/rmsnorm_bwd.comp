#version 450
// Backward of rmsnorm.comp from the saved r. With s = silu(z), per (row, group), n = h r:
//   gate first:  dn = dy w            dh = r (dn - n mean(dn n))    dx = dh s    dz = dh x silu'(z)
//   gate after:  dn = dy w s          dx = r (dn - n mean(dn n))                dz = dy n w silu'(z)
//   dw[c] = sum over rows of dy n (times s when the gate comes after)
// MODE 0: one workgroup per (row, group) for dx and dz. MODE 1: per block of rows and channel, partial sums of dw.
// MODE 2: both at once, one workgroup per (block of rows, group), walking the block's rows in order with its columns'
// dw sums in registers. The host adds the partials in a fixed order. As in the forward, each invocation holds PER
// elements of a group, so dy, x and z are read once per pass. z and dz are in place in columns [z_col, z_col + dim)
// and [dz_col, dz_col + dim) of rows z_stride and dz_stride apart (the fused projection's output and its gradient).
// OUT_BF16 (a variant): dz is stored as bf16 bits (bf16_store.glsl), as the products that read it take it, and the
// bf16 copy's scale word (1: bits 0) into absmax_out[0], so that no fill precedes the pass (nothing folds there).
// FORM bit 2: dx += res (a block's norm in the residual stream: the stream's gradient added in the same pass).
// DX_COPY (OUT_BF16, no z): dx is also stored as bf16 bits where dz would go (the layer below's dout, as its
// products take it; the fp32 dx stays the residual stream's). A constant, not a flag: the store's dead branch
// slowed every other pipeline of this shader.
// FOLD (MODE 0 and 2): the largest |dz| (1: fp32 dz, the fused projection's gradient) or |dx| (2: fp32 dx, the
// residual stream's gradient, the layer below's dout) also goes into absmax_out[0] (fold_absmax.glsl), for the f16
// tensor-core operands of the products that read it.
// QUADS (MODE 0 and 2): runs of four neighbouring elements per invocation, each moved in one 16-byte access (8 for
// bf16), as in the forward; the host sets it where every row start, stride, column and binding allows.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint MODE = 0;
layout(constant_id = 2) const uint PER = 1;   // MODE 0 and 2: elements per invocation, ceil(group_size / workgroup size)
layout(constant_id = 3) const bool QUADS = false;   // (PER, dim, group_size and the strides and columns multiples of 4)
layout(constant_id = 4) const uint FOLD = 0;
layout(constant_id = 5) const bool DX_COPY = false;
// FORM bit 0: z given, bit 1: the gate after the norm, bit 2: dx += res. A constant, not a
// push flag, so that each form's pipeline holds only its own operands and arithmetic.
layout(constant_id = 6) const uint FORM = 0;
const bool gated = (FORM & 1u) != 0u;
const bool after = (FORM & 2u) != 0u;
const bool residual = (FORM & 4u) != 0u;
const bool FOLD_ABSMAX = FOLD != 0;

layout(std430, binding = 0) readonly buffer Dy { float dy[]; };
// x and dx are bf16 in the TENSORS_BF16 variants (the SSD's y and its gradient), z in the IN_BF16 ones (the fused
// projection's output in bf16).
#include "tensor_elems.glsl"
layout(std430, binding = 1) readonly buffer X { TENSOR_ELEM x[]; };
layout(std430, binding = 2) readonly buffer Z { IN_ELEM z[]; };
layout(std430, binding = 3) readonly buffer W { float w[]; };
layout(std430, binding = 4) readonly buffer Rstd { float rstd[]; };
layout(std430, binding = 5) writeonly buffer Dx { TENSOR_ELEM dx[]; };
#ifdef OUT_BF16
#include "bf16_store.glsl"
layout(std430, binding = 6) writeonly buffer Dz { uint16_t dz16[]; };
layout(std430, binding = 6) writeonly buffer Dz4 { uvec2 dz_words2[]; };
#define STORE_DZ(i, v) BF16_STORE(dz16, i, v)
#define STORE_DZ4(i, v) BF16_STORE4(dz_words2, i, v)
#else
layout(std430, binding = 6) writeonly buffer Dz { float dz[]; };
layout(std430, binding = 6) writeonly buffer Dz4 { vec4 dz4[]; };
#define STORE_DZ(i, v) dz[i] = (v)
#define STORE_DZ4(i, v) dz4[i] = (v)
#endif
layout(std430, binding = 7) writeonly buffer DwPart { float dw_part[]; };   // (blocks, dim)
layout(std430, binding = 8) readonly buffer Res { float res[]; };           // FORM bit 2: x's shape
layout(std430, binding = 9) buffer AbsMax { uint absmax_out[]; };            // FOLD; OUT_BF16: the copy's scale word
// The same bindings four elements at a time (QUADS).
layout(std430, binding = 0) readonly buffer Dy4 { vec4 dy4[]; };
layout(std430, binding = 1) readonly buffer X4 { TENSOR_WORD4 x4[]; };
layout(std430, binding = 2) readonly buffer Z4 { IN_WORD4 z4[]; };
layout(std430, binding = 3) readonly buffer W4 { vec4 w4[]; };
layout(std430, binding = 5) writeonly buffer Dx4 { TENSOR_WORD4 dx4[]; };
layout(std430, binding = 8) readonly buffer Res4 { vec4 res4[]; };

layout(push_constant) uniform Push {
    uint rows, dim, group_size;
    uint block_rows;
    uint z_stride, z_col, dz_stride, dz_col;
} p;

#include "row_sum.glsl"
#include "fold_absmax.glsl"

float sigmoid(float v) {
    return 1.0 / (1.0 + exp(-v));
}

// The group's element an invocation holds e-th (MODE 0 and 2): strided by the workgroup, or in runs of four.
uint element(uint tid, uint e) {
    return QUADS ? 4 * (tid + (e / 4) * gl_WorkGroupSize.x) + e % 4 : tid + e * gl_WorkGroupSize.x;
}

void main() {
    const uint tid = gl_LocalInvocationID.x;
    const uint groups = p.dim / p.group_size;
    const uint blocks = (p.rows + p.block_rows - 1) / p.block_rows;
#ifdef OUT_BF16
    if (gl_WorkGroupID.x == 0 && tid == 0) {
        absmax_out[0] = 0u;
    }
#endif
    if (MODE == 1) {
        GRID_STRIDE_LOOP(e, blocks * p.dim) {
            const uint c = e % p.dim;
            const uint blk = e / p.dim;
            const uint r1 = min(blk * p.block_rows + p.block_rows, p.rows);
            float acc = 0.0;
            for (uint row = blk * p.block_rows; row < r1; ++row) {
                const uint o = row * p.dim + c;
                const uint zo = row * p.z_stride + p.z_col + c;
                float h = TENSOR_LOAD(x, o);
                if (gated && !after) {
                    h *= silu(IN_LOAD(z, zo));
                }
                float v = dy[o] * h * rstd[row * groups + c / p.group_size];
                if (gated && after) {
                    v *= silu(IN_LOAD(z, zo));
                }
                acc += v;
            }
            dw_part[e] = acc;
        }
        return;
    }
    const bool sums = MODE == 2;
    const uint items = (sums ? blocks : p.rows) * groups;
    uint largest = 0u;
    for (uint item = gl_WorkGroupID.x; item < items; item += gl_NumWorkGroups.x) {
        const uint col = (item % groups) * p.group_size;
        const uint r0 = sums ? (item / groups) * p.block_rows : item / groups;
        const uint r1 = sums ? min(r0 + p.block_rows, p.rows) : r0 + 1;
        float wv[PER];
        float dw[PER];
        [[unroll]] for (uint e = 0; e < PER; ++e) {
            const uint j = element(tid, e);
            wv[e] = j < p.group_size ? (QUADS ? w4[(col + j) / 4][e % 4] : w[col + j]) : 0.0;
            dw[e] = 0.0;
        }
        for (uint row = r0; row < r1; ++row) {
            const uint base = row * p.dim + col;
            const uint zbase = row * p.z_stride + p.z_col + col;
            const uint dzbase = row * p.dz_stride + p.dz_col + col;
            const float r = rstd[row * groups + col / p.group_size];
            float dyv[PER];
            float xv[PER];
            float zv[PER];
            float rv[PER];   // the residual's gradient, loaded with the rest so its latency overlaps theirs
            if (QUADS) {
                [[unroll]] for (uint q = 0; q < PER / 4; ++q) {
                    const uint j = element(tid, 4 * q);   // j + 3 is inside the group whenever j is
                    vec4 a = vec4(0.0), b = vec4(0.0), c = vec4(0.0), d = vec4(0.0);
                    if (j < p.group_size) {
                        a = dy4[(base + j) / 4];
                        b = TENSOR_LOAD4(x4, (base + j) / 4);
                        if (residual) {
                            d = res4[(base + j) / 4];
                        }
                        if (gated) {
                            c = IN_LOAD4(z4, (zbase + j) / 4);
                        }
                    }
                    [[unroll]] for (uint k = 0; k < 4; ++k) {
                        dyv[4 * q + k] = a[k];
                        xv[4 * q + k] = b[k];
                        zv[4 * q + k] = c[k];
                        rv[4 * q + k] = d[k];
                    }
                }
            } else {
                [[unroll]] for (uint e = 0; e < PER; ++e) {
                    const uint j = element(tid, e);
                    dyv[e] = 0.0;
                    xv[e] = 0.0;
                    zv[e] = 0.0;
                    rv[e] = 0.0;
                    if (j < p.group_size) {
                        dyv[e] = dy[base + j];
                        xv[e] = TENSOR_LOAD(x, base + j);
                        if (residual) {
                            rv[e] = res[base + j];
                        }
                        if (gated) {
                            zv[e] = IN_LOAD(z, zbase + j);
                        }
                    }
                }
            }
            float dot = 0.0;
            [[unroll]] for (uint e = 0; e < PER; ++e) {
                if (element(tid, e) < p.group_size) {
                    const float s = gated ? silu(zv[e]) : 1.0;
                    const float h = gated && !after ? xv[e] * s : xv[e];
                    const float dn = dyv[e] * wv[e] * (gated && after ? s : 1.0);
                    dot = fma(dn, h * r, dot);
                }
            }
            const float mean = row_sum(dot) / float(p.group_size);
            float dxv[PER];
            float dzv[PER];
            [[unroll]] for (uint e = 0; e < PER; ++e) {
                dxv[e] = 0.0;
                dzv[e] = 0.0;
                if (element(tid, e) < p.group_size) {
                    const float sg = sigmoid(zv[e]);
                    const float s = gated ? zv[e] * sg : 1.0;
                    const float ds = sg * (1.0 + zv[e] * (1.0 - sg));   // silu'(z)
                    const float h = gated && !after ? xv[e] * s : xv[e];
                    const float n = h * r;
                    const float dn = dyv[e] * wv[e] * (gated && after ? s : 1.0);
                    const float dh = r * (dn - n * mean);
                    if (gated && !after) {
                        dxv[e] = dh * s + rv[e];
                        dzv[e] = dh * xv[e] * ds;
                    } else {
                        dxv[e] = dh + rv[e];
                        dzv[e] = dyv[e] * n * wv[e] * ds;
                    }
                    largest = fold_value(largest, FOLD == 1 ? dzv[e] : dxv[e]);
                    if (sums) {
                        float v = dyv[e] * h * r;
                        if (gated && after) {
                            v *= s;
                        }
                        dw[e] += v;
                    }
                }
            }
            if (QUADS) {
                [[unroll]] for (uint q = 0; q < PER / 4; ++q) {
                    const uint j = element(tid, 4 * q);
                    if (j < p.group_size) {
                        TENSOR_STORE4(dx4, (base + j) / 4, vec4(dxv[4 * q], dxv[4 * q + 1], dxv[4 * q + 2], dxv[4 * q + 3]));
                        if (gated) {
                            STORE_DZ4((dzbase + j) / 4, vec4(dzv[4 * q], dzv[4 * q + 1], dzv[4 * q + 2], dzv[4 * q + 3]));
                        } else if (DX_COPY) {
                            STORE_DZ4((dzbase + j) / 4, vec4(dxv[4 * q], dxv[4 * q + 1], dxv[4 * q + 2], dxv[4 * q + 3]));
                        }
                    }
                }
            } else {
                [[unroll]] for (uint e = 0; e < PER; ++e) {
                    const uint j = element(tid, e);
                    if (j < p.group_size) {
                        TENSOR_STORE(dx, base + j, dxv[e]);
                        if (gated) {
                            STORE_DZ(dzbase + j, dzv[e]);
                        } else if (DX_COPY) {
                            STORE_DZ(dzbase + j, dxv[e]);
                        }
                    }
                }
            }
        }
        if (sums) {
            [[unroll]] for (uint e = 0; e < PER; ++e) {
                const uint j = element(tid, e);
                if (j < p.group_size) {
                    dw_part[(r0 / p.block_rows) * p.dim + col + j] = dw[e];
                }
            }
        }
    }
    fold_absmax(largest);
}
