#version 450
// Depthwise 1-D convolution over the sequence, channels last (mamba_ssm's conv1d over [x, B, C] and Hydra's):
//   u[b, t, c] = bias[c] + sum_{k < K} w[c, k] x[b, t + k - left, c]     (x outside [0, L) is 0)
//   y = silu(u) when SILU, else u
// left = K - 1 for the causal form, floor((K - 1) / 2) for "same" padding (PyTorch's padding='same').
// One invocation per output element, consecutive channels in consecutive invocations. x is read in place from
// columns [x_col, x_col + channels) of rows x_stride apart (the fused projection's xBC), and y is written cut by
// channel into up to three tensors of their own (x, B and C for the SSD): [0, split1), [split1, split2), [split2, C).
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint K = 4;      // kernel width
layout(constant_id = 2) const uint SILU = 0;

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer W { float w[]; };      // (channels, K)
layout(std430, binding = 2) readonly buffer Bias { float bias[]; };
layout(std430, binding = 3) writeonly buffer Y0 { float y0[]; };
layout(std430, binding = 4) writeonly buffer Y1 { float y1[]; };
layout(std430, binding = 5) writeonly buffer Y2 { float y2[]; };

layout(push_constant) uniform Push {
    uint batch, seqlen, channels, left, has_bias;
    uint x_stride, x_col, split1, split2;
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
                u = fma(w[c * K + k], x[(b * p.seqlen + uint(s)) * p.x_stride + p.x_col + c], u);
            }
        }
        const float v = SILU != 0 ? silu(u) : u;
        if (c < p.split1) {
            y0[bt * p.split1 + c] = v;
        } else if (c < p.split2) {
            y1[bt * (p.split2 - p.split1) + c - p.split1] = v;
        } else {
            y2[bt * (p.channels - p.split2) + c - p.split2] = v;
        }
    }
}
