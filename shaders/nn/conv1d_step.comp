#version 450
// One step of the causal depthwise conv with its rolling state (generation): for each (batch, channel),
//   u = bias + sum_{k < K-1} w[k] state[k] + w[K-1] x ;  state <- (state[1..], x) ;  y = silu(u)
// state (b, channels, K - 1) holds the last K - 1 inputs, oldest first (HF's conv_states minus the current slot).
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint K = 4;

layout(std430, binding = 0) readonly buffer X { float x[]; };        // (b, channels)
layout(std430, binding = 1) readonly buffer W { float w[]; };        // (channels, K)
layout(std430, binding = 2) readonly buffer Bias { float bias[]; };
layout(std430, binding = 3) buffer State { float state[]; };         // (b, channels, K - 1)
layout(std430, binding = 4) writeonly buffer Y { float y[]; };       // (b, channels)

layout(push_constant) uniform Push {
    uint batch, channels, has_bias;
} p;

void main() {
    GRID_STRIDE_LOOP(e, p.batch * p.channels) {
        const uint c = e % p.channels;
        float u = p.has_bias != 0u ? bias[c] : 0.0;
        const uint s0 = e * (K - 1);
        [[unroll]] for (uint k = 0; k + 1 < K; ++k) {
            u = fma(w[c * K + k], state[s0 + k], u);
        }
        const float xv = x[e];
        u = fma(w[c * K + K - 1], xv, u);
        [[unroll]] for (uint k = 0; k + 2 < K; ++k) {
            state[s0 + k] = state[s0 + k + 1];
        }
        if (K > 1) {
            state[s0 + K - 2] = xv;
        }
        y[e] = silu(u);
    }
}
