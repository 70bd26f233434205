#version 450
// Moves rows along the sequence axis of a (b, L, rest) tensor: the bidirectional SSD's flips and shifts.
//   out[b, t, :] (+)= in[b, src(t), :]   src(t) = FLIP ? L - 1 - t - offset : t + offset
// and 0 where src(t) falls outside [0, L) (a shifted-out row). With accumulate, out is read and added to.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer In { float inv[]; };
layout(std430, binding = 1) buffer Out { float outv[]; };

layout(push_constant) uniform Push {
    uint batch, seqlen, row;   // row = floats per position
    uint flip;
    int offset;
    uint accumulate;
} p;

void main() {
    GRID_STRIDE_LOOP(e, p.batch * p.seqlen * p.row) {
        const uint k = e % p.row;
        const uint bt = e / p.row;
        const int t = int(bt % p.seqlen);
        const uint b = bt / p.seqlen;
        const int src = p.flip != 0u ? int(p.seqlen) - 1 - t - p.offset : t + p.offset;
        float v = 0.0;
        if (src >= 0 && src < int(p.seqlen)) {
            v = inv[(b * p.seqlen + uint(src)) * p.row + k];
        }
        outv[e] = p.accumulate != 0u ? outv[e] + v : v;
    }
}
