#version 450
// The sum of squares of a vector in a fixed order (the gradient norm of clip_grad_norm_; no atomics, so the same
// inputs give the same bits):
//   MODE 0: partial[i] = sum_k a[i + k * parts]^2 for i < parts: neighbouring invocations read neighbouring floats;
//   MODE 1 (one workgroup): out[0] = sum of partial[0 .. parts): each invocation a strided share in order, then a tree.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;   // a power of two
layout(constant_id = 1) const uint MODE = 0;

layout(std430, binding = 0) readonly buffer In { float a[]; };
layout(std430, binding = 1) writeonly buffer Out { float outv[]; };

layout(push_constant) uniform Push {
    uint n, parts;
} p;

shared float red[gl_WorkGroupSize.x];

void main() {
    if (MODE == 0) {
        GRID_STRIDE_LOOP(i, p.parts) {
            float s = 0.0;
            for (uint k = i; k < p.n; k += p.parts) {
                const float v = a[k];
                s = fma(v, v, s);
            }
            outv[i] = s;
        }
        return;
    }

    const uint tid = gl_LocalInvocationID.x;
    float s = 0.0;
    for (uint k = tid; k < p.parts; k += gl_WorkGroupSize.x) {
        s += a[k];
    }
    red[tid] = s;
    barrier();
    for (uint half_ = gl_WorkGroupSize.x / 2; half_ > 0; half_ >>= 1) {
        if (tid < half_) {
            red[tid] += red[tid + half_];
        }
        barrier();
    }
    if (tid == 0) {
        outv[0] = red[0];
    }
}
