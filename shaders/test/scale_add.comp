#version 450
// Runtime test kernel: y = alpha * x + beta. Used to check dispatch, push constants, barriers and validation.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) writeonly buffer Y { float y[]; };

layout(push_constant) uniform Push {
    uint n;
    float alpha;
    float beta;
} p;

void main() {
    GRID_STRIDE_LOOP(i, p.n) {
        y[i] = p.alpha * x[i] + p.beta;
    }
}
