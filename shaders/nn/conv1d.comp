#version 450
// Depthwise 1-D convolution over the sequence, channels last (mamba_ssm's conv1d over [x, B, C] and Hydra's):
//   u[b, t, c] = bias[c] + sum_{k < K} w[c, k] x[b, t + k - left, c]     (x outside [0, L) is 0)
//   y = silu(u) when SILU, else u
// left = K - 1 for the causal form, floor((K - 1) / 2) for "same" padding (PyTorch's padding='same').
// One invocation per (batch element, block of block_rows positions, channel), consecutive channels in consecutive
// invocations, walks its block in order with the last K inputs in registers: each x is read once (plus K - 1 of halo)
// instead of K times, the loads issued STEP positions at a time. x is read in place from columns [x_col,
// x_col + channels) of rows x_stride apart (the fused projection's xBC), and y is written cut by channel into up to
// three tensors of their own (x, B and C for the SSD): [0, split1), [split1, split2), [split2, C).
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint K = 4;      // kernel width
layout(constant_id = 2) const uint SILU = 0;

// The outputs are bf16 in the TENSORS_BF16 variants (the SSD's x, B and C on bf16 tensors), x in the IN_BF16 ones
// (the fused projection's output in bf16).
#include "tensor_elems.glsl"
layout(std430, binding = 0) readonly buffer X { IN_ELEM x[]; };
layout(std430, binding = 1) readonly buffer W { float w[]; };      // (channels, K)
layout(std430, binding = 2) readonly buffer Bias { float bias[]; };
layout(std430, binding = 3) writeonly buffer Y0 { TENSOR_ELEM y0[]; };
layout(std430, binding = 4) writeonly buffer Y1 { TENSOR_ELEM y1[]; };
layout(std430, binding = 5) writeonly buffer Y2 { TENSOR_ELEM y2[]; };

layout(push_constant) uniform Push {
    uint batch, seqlen, channels, left, has_bias, block_rows;
    uint x_stride, x_col, split1, split2;
} p;

const uint STEP = 8;   // positions whose loads are issued together

void store(uint row, uint c, float v) {
    if (c < p.split1) {
        TENSOR_STORE(y0, row * p.split1 + c, v);
    } else if (c < p.split2) {
        TENSOR_STORE(y1, row * (p.split2 - p.split1) + c - p.split1, v);
    } else {
        TENSOR_STORE(y2, row * (p.channels - p.split2) + c - p.split2, v);
    }
}

void main() {
    const uint blocks = (p.seqlen + p.block_rows - 1) / p.block_rows;
    GRID_STRIDE_LOOP(e, p.batch * blocks * p.channels) {
        const uint c = e % p.channels;
        const uint bb = e / p.channels;
        const uint blk = bb % blocks;
        const uint b = bb / blocks;
        const int t0 = int(blk * p.block_rows);
        const int t1 = int(min(blk * p.block_rows + p.block_rows, p.seqlen));
        const int L = int(p.seqlen);
        const int left = int(p.left);
        const uint xbase = b * p.seqlen * p.x_stride + p.x_col + c;   // (b, 0, c) of x
        float wk[K];
        float win[K];   // win[k] = x[t + k - left] for the current t
        [[unroll]] for (uint k = 0; k < K; ++k) {
            wk[k] = w[c * K + k];
        }
        const float b0 = p.has_bias != 0u ? bias[c] : 0.0;
        [[unroll]] for (uint k = 0; k + 1 < K; ++k) {
            const int s = t0 + int(k) - left;
            win[k + 1] = s >= 0 && s < L ? IN_LOAD(x, xbase + uint(s) * p.x_stride) : 0.0;
        }
        for (int tb = t0; tb < t1; tb += int(STEP)) {
            float xs[STEP];
            [[unroll]] for (uint i = 0; i < STEP; ++i) {
                const int t = tb + int(i);
                const int sNew = t + int(K) - 1 - left;
                xs[i] = t < t1 && sNew >= 0 && sNew < L ? IN_LOAD(x, xbase + uint(sNew) * p.x_stride) : 0.0;
            }
            [[unroll]] for (uint i = 0; i < STEP; ++i) {
                const int t = tb + int(i);
                if (t >= t1) {
                    break;
                }
                [[unroll]] for (uint k = 0; k + 1 < K; ++k) {
                    win[k] = win[k + 1];
                }
                win[K - 1] = xs[i];
                float u = b0;
                [[unroll]] for (uint k = 0; k < K; ++k) {
                    u = fma(wk[k], win[k], u);
                }
                store(b * p.seqlen + uint(t), c, SILU != 0 ? silu(u) : u);
            }
        }
    }
}
