#version 450
// The bidirectional SSD's output from its two directions (sum mode: shift 0; shift mode, Hydra: shift 1):
//   y_pre[t] = y_fwd[t - shift] + y_rev[t + shift] + D x[t]      (terms outside [0, L) are 0)
//   y = y_pre * silu(z)
// y_rev is the reverse scan at original positions (a mirrored causal run). D is (h), (h, p) or (b, L, h).
// Built with TENSORS_BF16, every tensor here but D is bf16 (the sums fp32).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "ssd_common.glsl"

layout(local_size_x_id = 0) in;

#include "tensor_elems.glsl"
layout(std430, binding = 0) readonly buffer Yf { TENSOR_ELEM yf[]; };
layout(std430, binding = 1) readonly buffer Yr { TENSOR_ELEM yr[]; };
layout(std430, binding = 2) readonly buffer X { TENSOR_ELEM x[]; };
layout(std430, binding = 3) readonly buffer Dv { float D[]; };
layout(std430, binding = 4) readonly buffer Z { TENSOR_ELEM z[]; };
layout(std430, binding = 5) buffer Y { TENSOR_ELEM y[]; };
layout(std430, binding = 6) writeonly buffer YPre { TENSOR_ELEM y_pre[]; };

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
            v += TENSOR_LOAD(yf, (b * p.seqlen + uint(tf)) * row + k);
        }
        if (tr < L) {
            v += TENSOR_LOAD(yr, (b * p.seqlen + uint(tr)) * row + k);
        }
        if (SSD_HAS(p.flags, SSD_D_HEAD)) {
            v += D[head] * TENSOR_LOAD(x, e);
        } else if (SSD_HAS(p.flags, SSD_D_HEAD_DIM)) {
            v += D[k] * TENSOR_LOAD(x, e);
        } else if (SSD_HAS(p.flags, SSD_D_TOKEN)) {
            v += D[bt * p.nheads + head] * TENSOR_LOAD(x, e);
        }
        if (SSD_HAS(p.flags, SSD_Z)) {
            TENSOR_STORE(y_pre, e, v);
            v *= silu(TENSOR_LOAD(z, e));
        }
        TENSOR_STORE(y, e, SSD_HAS(p.flags, SSD_ACCUMULATE) ? TENSOR_LOAD(y, e) + v : v);
    }
}
