#version 450
// Elementwise binary ops on fp32: y = a + b, a - b, a * b, or alpha * a + beta * b (residual adds, gradient
// accumulation, scaling). y may alias a or b (in place): each element is read before it is written by the same
// invocation.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint OP = 0;  // 0 add, 1 sub, 2 mul, 3 axpby

layout(std430, binding = 0) readonly buffer A { float a[]; };
layout(std430, binding = 1) readonly buffer B { float b[]; };
layout(std430, binding = 2) writeonly buffer Y { float y[]; };

layout(push_constant) uniform Push {
    uint n;
    float alpha;
    float beta;
} p;

void main() {
    GRID_STRIDE_LOOP(i, p.n) {
        float u = a[i];
        float v = b[i];
        float r;
        if (OP == 0) {
            r = u + v;
        } else if (OP == 1) {
            r = u - v;
        } else if (OP == 2) {
            r = u * v;
        } else {
            r = p.alpha * u + p.beta * v;
        }
        y[i] = r;
    }
}
