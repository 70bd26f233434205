#version 450
// Copies a range of columns between row-major matrices with the same rows (splitting the fused projection into z,
// xBC and dt, and merging their gradients back): dst[r, dst_col + j] = src[r, src_col + j], j < width.
// WORDS: every column count and offset is a multiple of 4, so each invocation moves 16 bytes (one vec4 load and
// store, a quarter of the index arithmetic); the host picks it when the layout allows.
// OUT_BF16 (a variant): dst holds bf16 bits (bf16_store.glsl; WORDS then stores four of them per vec4).
// IN_BF16 (a variant): src holds bf16 (tensor_elems.glsl; WORDS then loads four per 8 bytes), widened exactly.
// FOLD_ABSMAX (fp32 dst): the largest |value| copied also goes into absmax_out[0] (fold_absmax.glsl), for the f16
// tensor-core operands of the tensor it lands in.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "tensor_elems.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const bool WORDS = false;
layout(constant_id = 2) const bool FOLD_ABSMAX = false;

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
layout(std430, binding = 2) buffer AbsMax { uint absmax_out[]; };   // FOLD_ABSMAX
#include "fold_absmax.glsl"

layout(push_constant) uniform Push {
    uint rows, width, src_cols, src_col, dst_cols, dst_col;
} p;

void main() {
    uint largest = 0u;
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
            const vec4 v = IN_LOAD4(src4, (r * p.src_cols + p.src_col) / 4 + j);
            dst4[(r * p.dst_cols + p.dst_col) / 4 + j] = v;
            largest = fold_value(fold_value(largest, v.x), v.y);
            largest = fold_value(fold_value(largest, v.z), v.w);
#endif
        }
    } else {
        GRID_STRIDE_LOOP(e, p.rows * p.width) {
            const uint r = e / p.width;
            const uint j = e % p.width;
            const float v = IN_LOAD(src, r * p.src_cols + p.src_col + j);
            STORE(r * p.dst_cols + p.dst_col + j, v);
            largest = fold_value(largest, v);
        }
    }
    fold_absmax(largest);
}
