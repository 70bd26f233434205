#version 450
// Moves rows along the sequence axis of a (b, L, rest) tensor:
//   FLIP 0: out[b, t, :] = in[b, t + offset, :], 0 where t + offset falls outside [0, L) (the Hydra form's shifts);
//   FLIP 1: out[b, t, :] = in[b, L - 1 - t, :] (torch.flip along dim 1: the naive bidirectional composition).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint FLIP = 0;

layout(std430, binding = 0) readonly buffer In { float inv[]; };
layout(std430, binding = 1) writeonly buffer Out { float outv[]; };

layout(push_constant) uniform Push {
    uint batch, seqlen, row;   // row = floats per position
    int offset;
} p;

void main() {
    GRID_STRIDE_LOOP(e, p.batch * p.seqlen * p.row) {
        const uint k = e % p.row;
        const uint bt = e / p.row;
        const int t = int(bt % p.seqlen);
        const int src = FLIP != 0 ? int(p.seqlen) - 1 - t : t + p.offset;
        const uint b = bt / p.seqlen;
        float v = 0.0;
        if (src >= 0 && src < int(p.seqlen)) {
            v = inv[(b * p.seqlen + uint(src)) * p.row + k];
        }
        outv[e] = v;
    }
}
