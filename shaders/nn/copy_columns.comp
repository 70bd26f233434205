#version 450
// Copies a range of columns between row-major matrices with the same rows (splitting the fused projection into z,
// xBC and dt, and merging their gradients back): dst[r, dst_col + j] = src[r, src_col + j], j < width.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer Src { float src[]; };
layout(std430, binding = 1) writeonly buffer Dst { float dst[]; };

layout(push_constant) uniform Push {
    uint rows, width, src_cols, src_col, dst_cols, dst_col;
} p;

void main() {
    GRID_STRIDE_LOOP(e, p.rows * p.width) {
        const uint r = e / p.width;
        const uint j = e % p.width;
        dst[r * p.dst_cols + p.dst_col + j] = src[r * p.src_cols + p.src_col + j];
    }
}
