#version 450
// out[r] = the first index of the largest value of row r of x (rows, n); NaN is never the largest. One workgroup per
// row (a grid-stride loop over rows): each invocation a strided share, then a tree that keeps the lower index on ties,
// so the answer is that of a left-to-right scan. Training accuracy reads these ints instead of the whole logits.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;   // a power of two

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) writeonly buffer Out { int outv[]; };

layout(push_constant) uniform Push {
    uint rows, n;
} p;

shared float best_v[gl_WorkGroupSize.x];
shared uint best_i[gl_WorkGroupSize.x];

const uint NONE = 0xFFFFFFFFu;

// Whether (v, i) beats (bv, bi): larger, or as large and earlier; NaN never beats, anything beats none.
bool beats(float v, uint i, float bv, uint bi) {
    if (i == NONE || isnan(v)) {
        return false;
    }
    return bi == NONE || v > bv || (v == bv && i < bi);
}

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
        best_v[tid] = bv;
        best_i[tid] = bi;
        barrier();
        for (uint half_ = gl_WorkGroupSize.x / 2; half_ > 0; half_ >>= 1) {
            if (tid < half_ && beats(best_v[tid + half_], best_i[tid + half_], best_v[tid], best_i[tid])) {
                best_v[tid] = best_v[tid + half_];
                best_i[tid] = best_i[tid + half_];
            }
            barrier();
        }
        if (tid == 0) {
            outv[row] = best_i[0] == NONE ? 0 : int(best_i[0]);   // a row of NaN only: 0
        }
        barrier();
    }
}
