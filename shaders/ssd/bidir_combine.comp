#version 450
// The bidirectional SSD's output from its two directions (sum mode: shift 0; shift mode, Hydra: shift 1):
//   y_pre[t] = y_fwd[t - shift] + y_rev[t + shift] + D x[t]      (terms outside [0, L) are 0)
//   y = y_pre * silu(z)
// y_rev is the reverse scan at original positions (a mirrored causal run). D is (h), (h, p) or (b, L, h).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "ssd_common.glsl"

layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer Yf { float yf[]; };
layout(std430, binding = 1) readonly buffer Yr { float yr[]; };
layout(std430, binding = 2) readonly buffer X { float x[]; };
layout(std430, binding = 3) readonly buffer Dv { float D[]; };
layout(std430, binding = 4) readonly buffer Z { float z[]; };
layout(std430, binding = 5) buffer Y { float y[]; };
layout(std430, binding = 6) writeonly buffer YPre { float y_pre[]; };

layout(push_constant) uniform Push {
    uint batch, seqlen, nheads, headdim, shift;
    uint flags;   // SsdFlags (ssd_flags.glsl); with SSD_ACCUMULATE and shift L the backward adds only D g to dx
} p;

void main() {
    const uint row = p.nheads * p.headdim;
    GRID_STRIDE_LOOP(e, p.batch * p.seqlen * row) {
        const uint k = e % row;
        const uint bt = e / row;
        const int t = int(bt % p.seqlen);
        const uint b = bt / p.seqlen;
        const uint head = k / p.headdim;
        const int L = int(p.seqlen);
        const int tf = t - int(p.shift);
        const int tr = t + int(p.shift);
        float v = 0.0;
        if (tf >= 0) {
            v += yf[(b * p.seqlen + uint(tf)) * row + k];
        }
        if (tr < L) {
            v += yr[(b * p.seqlen + uint(tr)) * row + k];
        }
        if (SSD_HAS(p.flags, SSD_D_HEAD)) {
            v += D[head] * x[e];
        } else if (SSD_HAS(p.flags, SSD_D_HEAD_DIM)) {
            v += D[k] * x[e];
        } else if (SSD_HAS(p.flags, SSD_D_TOKEN)) {
            v += D[bt * p.nheads + head] * x[e];
        }
        if (SSD_HAS(p.flags, SSD_Z)) {
            y_pre[e] = v;
            v *= silu(z[e]);
        }
        y[e] = SSD_HAS(p.flags, SSD_ACCUMULATE) ? y[e] + v : v;
    }
}
