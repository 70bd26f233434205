#version 450
// Copies a range of columns between row-major matrices with the same rows (splitting the fused projection into z,
// xBC and dt, and merging their gradients back): dst[r, dst_col + j] = src[r, src_col + j], j < width.
// WORDS: every column count and offset is a multiple of 4, so each invocation moves 16 bytes (one vec4 load and
// store, a quarter of the index arithmetic); the host picks it when the layout allows.
// OUT_BF16 (a variant): dst holds bf16 bits (bf16_store.glsl; WORDS then stores four of them per vec4).
// IN_BF16 (a variant): src holds bf16 (tensor_elems.glsl; WORDS then loads four per 8 bytes), widened exactly.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "tensor_elems.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const bool WORDS = false;

layout(std430, binding = 0) readonly buffer Src { IN_ELEM src[]; };
layout(std430, binding = 0) readonly buffer Src4 { IN_WORD4 src4[]; };
#ifdef OUT_BF16
#include "bf16_store.glsl"
layout(std430, binding = 1) writeonly buffer Dst { uint16_t dst16[]; };
#define STORE(i, v) BF16_STORE(dst16, i, v)
#else
layout(std430, binding = 1) writeonly buffer Dst { float dst[]; };
layout(std430, binding = 1) writeonly buffer Dst4 { vec4 dst4[]; };
#define STORE(i, v) dst[i] = (v)
#endif

layout(push_constant) uniform Push {
    uint rows, width, src_cols, src_col, dst_cols, dst_col;
} p;

void main() {
    if (WORDS) {
        const uint w = p.width / 4;
        GRID_STRIDE_LOOP(e, p.rows * w) {
            const uint r = e / w;
            const uint j = e % w;
#ifdef OUT_BF16
            const vec4 v = IN_LOAD4(src4, (r * p.src_cols + p.src_col) / 4 + j);
            const uint o = r * p.dst_cols + p.dst_col + 4 * j;
            STORE(o, v.x);
            STORE(o + 1, v.y);
            STORE(o + 2, v.z);
            STORE(o + 3, v.w);
#else
            dst4[(r * p.dst_cols + p.dst_col) / 4 + j] = IN_LOAD4(src4, (r * p.src_cols + p.src_col) / 4 + j);
#endif
        }
    } else {
        GRID_STRIDE_LOOP(e, p.rows * p.width) {
            const uint r = e / p.width;
            const uint j = e % p.width;
            STORE(r * p.dst_cols + p.dst_col + j, IN_LOAD(src, r * p.src_cols + p.src_col + j));
        }
    }
}
