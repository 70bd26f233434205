#version 450
// Backward of conv1d.comp. The pre-activation u is recomputed (K multiply-adds) rather than stored, and
//   du[t] = dy[t] * silu'(u[t])  (or dy[t] without the activation)
//   MODE 0: dx[b, s, c] = sum_k w[c, k] du[b, s - k + left, c]
//   MODE 1: per block of positions of one batch element, partial sums of dw[c, k] = sum_t du[t] x[t + k - left] and
//           dbias[c] = sum_t du[t]; the host adds the blocks in a fixed order (deterministic).
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint K = 4;
layout(constant_id = 2) const uint SILU = 0;
layout(constant_id = 3) const uint MODE = 0;

layout(std430, binding = 0) readonly buffer Dy { float dy[]; };
layout(std430, binding = 1) readonly buffer X { float x[]; };
layout(std430, binding = 2) readonly buffer W { float w[]; };
layout(std430, binding = 3) readonly buffer Bias { float bias[]; };
layout(std430, binding = 4) writeonly buffer Dx { float dx[]; };        // MODE 0
layout(std430, binding = 5) writeonly buffer DwPart { float dw_part[]; };   // MODE 1: (b, blocks, channels, K)
layout(std430, binding = 6) writeonly buffer DbPart { float db_part[]; };   // MODE 1: (b, blocks, channels)

layout(push_constant) uniform Push {
    uint batch, seqlen, channels, left, has_bias, block_rows;
} p;

// du at position t of batch element b, channel c (0 outside [0, L)).
float du_at(uint b, int t, uint c) {
    if (t < 0 || t >= int(p.seqlen)) {
        return 0.0;
    }
    const uint o = (b * p.seqlen + uint(t)) * p.channels + c;
    if (SILU == 0) {
        return dy[o];
    }
    float u = p.has_bias != 0u ? bias[c] : 0.0;
    [[unroll]] for (uint k = 0; k < K; ++k) {
        const int s = t + int(k) - int(p.left);
        if (s >= 0 && s < int(p.seqlen)) {
            u = fma(w[c * K + k], x[(b * p.seqlen + uint(s)) * p.channels + c], u);
        }
    }
    const float sg = 1.0 / (1.0 + exp(-u));
    return dy[o] * sg * (1.0 + u * (1.0 - sg));
}

void main() {
    if (MODE == 0) {
        GRID_STRIDE_LOOP(e, p.batch * p.seqlen * p.channels) {
            const uint c = e % p.channels;
            const uint bt = e / p.channels;
            const int s = int(bt % p.seqlen);
            const uint b = bt / p.seqlen;
            float v = 0.0;
            [[unroll]] for (uint k = 0; k < K; ++k) {
                v = fma(w[c * K + k], du_at(b, s - int(k) + int(p.left), c), v);
            }
            dx[e] = v;
        }
    } else {
        const uint blocks = (p.seqlen + p.block_rows - 1) / p.block_rows;
        GRID_STRIDE_LOOP(e, p.batch * blocks * p.channels) {
            const uint c = e % p.channels;
            const uint bb = e / p.channels;
            const uint blk = bb % blocks;
            const uint b = bb / blocks;
            float dwk[K];
            [[unroll]] for (uint k = 0; k < K; ++k) {
                dwk[k] = 0.0;
            }
            float db = 0.0;
            const uint t1 = min(blk * p.block_rows + p.block_rows, p.seqlen);
            for (uint t = blk * p.block_rows; t < t1; ++t) {
                const float d = du_at(b, int(t), c);
                db += d;
                [[unroll]] for (uint k = 0; k < K; ++k) {
                    const int s = int(t) + int(k) - int(p.left);
                    if (s >= 0 && s < int(p.seqlen)) {
                        dwk[k] = fma(d, x[(b * p.seqlen + uint(s)) * p.channels + c], dwk[k]);
                    }
                }
            }
            [[unroll]] for (uint k = 0; k < K; ++k) {
                dw_part[e * K + k] = dwk[k];
            }
            db_part[e] = db;
        }
    }
}
