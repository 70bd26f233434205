#version 450
// Depthwise 1-D convolution over the sequence, channels last (mamba_ssm's conv1d over [x, B, C] and Hydra's):
//   u[b, t, c] = bias[c] + sum_{k < K} w[c, k] x[b, t + k - left, c]     (x outside [0, L) is 0)
//   y = silu(u) when SILU, else u
// left = K - 1 for the causal form, floor((K - 1) / 2) for "same" padding (PyTorch's padding='same').
// One invocation per output element, consecutive channels in consecutive invocations.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint K = 4;      // kernel width
layout(constant_id = 2) const uint SILU = 0;

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer W { float w[]; };      // (channels, K)
layout(std430, binding = 2) readonly buffer Bias { float bias[]; };
layout(std430, binding = 3) writeonly buffer Y { float y[]; };

layout(push_constant) uniform Push {
    uint batch, seqlen, channels, left, has_bias;
} p;

void main() {
    GRID_STRIDE_LOOP(e, p.batch * p.seqlen * p.channels) {
        const uint c = e % p.channels;
        const uint bt = e / p.channels;
        const int t = int(bt % p.seqlen);
        const uint b = bt / p.seqlen;
        float u = p.has_bias != 0u ? bias[c] : 0.0;
        [[unroll]] for (uint k = 0; k < K; ++k) {
            const int s = t + int(k) - int(p.left);
            if (s >= 0 && s < int(p.seqlen)) {
                u = fma(w[c * K + k], x[(b * p.seqlen + uint(s)) * p.channels + c], u);
            }
        }
        y[e] = SILU != 0 ? silu(u) : u;
    }
}
