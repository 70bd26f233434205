#version 450
// out[r] = the first index of the largest value of row r of x (rows, n); NaN is never the largest. One workgroup per
// row (a grid-stride loop over rows): each invocation a strided share, then row_argmax's tree (the answer of a
// left-to-right scan). Training accuracy reads these ints instead of the whole logits.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;   // a power of two
#include "row_argmax.glsl"

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) writeonly buffer Out { int outv[]; };

layout(push_constant) uniform Push {
    uint rows, n;
} p;

void main() {
    const uint tid = gl_LocalInvocationID.x;
    for (uint row = gl_WorkGroupID.x; row < p.rows; row += gl_NumWorkGroups.x) {
        float bv = 0.0;
        uint bi = NONE;
        for (uint j = tid; j < p.n; j += gl_WorkGroupSize.x) {
            const float v = x[row * p.n + j];
            if (beats(v, j, bv, bi)) {
                bv = v;
                bi = j;
            }
        }
        const uint best = row_argmax(bv, bi);
        if (tid == 0) {
            outv[row] = best == NONE ? 0 : int(best);   // a row of NaN only: 0
        }
    }
}
