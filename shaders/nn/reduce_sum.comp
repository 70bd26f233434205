#version 450
// Deterministic sums for gradients of broadcast parameters (no atomics: the same inputs give the same bits).
// The input is viewed as (segments, rows, outs, inner); rows are cut into blocks of rows_per_block and
//   out[seg, block, o] = sum_{r in block} sum_{k < inner} a[seg, r, o, k] (* b[seg, r, o, k] when PRODUCT)
// in a fixed order (ACCUMULATE adds it to out). Two calls make a two-level tree: one block per (segment) gives the full sum.
// Built with TENSORS_BF16, a and b are bf16 tensors (the sums stay fp32).
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint PRODUCT = 0;
layout(constant_id = 2) const uint ACCUMULATE = 0;   // 1: out += the sum
const uint UNROLL = 8;

#include "tensor_elems.glsl"
layout(std430, binding = 0) readonly buffer In { TENSOR_ELEM a[]; };
layout(std430, binding = 1) readonly buffer In2 { TENSOR_ELEM bv[]; };
layout(std430, binding = 2) buffer Out { float outv[]; };

layout(push_constant) uniform Push {
    uint segments, rows, outs, inner, rows_per_block;
} p;

void main() {
    const uint blocks = (p.rows + p.rows_per_block - 1) / p.rows_per_block;
    GRID_STRIDE_LOOP(e, p.segments * blocks * p.outs) {
        const uint o = e % p.outs;
        const uint sb = e / p.outs;
        const uint blk = sb % blocks;
        const uint seg = sb / blocks;
        const uint r0 = blk * p.rows_per_block;
        const uint r1 = min(r0 + p.rows_per_block, p.rows);
        float sum = 0.0;
        uint r = r0;
        if (p.inner == 1) {
            // Rows UNROLL at a time, their loads issued before the adds (which keep their order).
            for (; r + UNROLL <= r1; r += UNROLL) {
                float t[UNROLL];
                [[unroll]] for (uint i = 0; i < UNROLL; ++i) {
                    const uint at = (seg * p.rows + r + i) * p.outs + o;
                    t[i] = PRODUCT != 0 ? TENSOR_LOAD(a, at) * TENSOR_LOAD(bv, at) : TENSOR_LOAD(a, at);
                }
                [[unroll]] for (uint i = 0; i < UNROLL; ++i) {
                    sum += t[i];
                }
            }
        }
        for (; r < r1; ++r) {
            const uint base = ((seg * p.rows + r) * p.outs + o) * p.inner;
            for (uint k = 0; k < p.inner; ++k) {
                sum += PRODUCT != 0 ? TENSOR_LOAD(a, base + k) * TENSOR_LOAD(bv, base + k) : TENSOR_LOAD(a, base + k);
            }
        }
        outv[e] = ACCUMULATE != 0 ? outv[e] + sum : sum;
    }
}
