#version 450
// y = -exp(x): Mamba2's A from A_log (and, as dA_log = dA * A, its gradient through Elementwise.Mul).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) writeonly buffer Y { float y[]; };

layout(push_constant) uniform Push {
    uint n;
} p;

void main() {
    GRID_STRIDE_LOOP(i, p.n) {
        y[i] = -exp(x[i]);
    }
}
