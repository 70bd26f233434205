#version 450
// y[r, j] += bias[j] over the rows of a row-major matrix (a Linear layer's bias).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;

layout(std430, binding = 0) buffer Y { float y[]; };
layout(std430, binding = 1) readonly buffer Bias { float bias[]; };

layout(push_constant) uniform Push {
    uint rows, cols;
} p;

void main() {
    GRID_STRIDE_LOOP(e, p.rows * p.cols) {
        y[e] += bias[e % p.cols];
    }
}
