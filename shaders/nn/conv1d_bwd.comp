#version 450
// Backward of conv1d.comp in one pass. The pre-activation u is recomputed (K multiply-adds) rather than stored, and
//   du[t] = dy[t] * silu'(u[t])  (or dy[t] without the activation)
//   dx[b, s, c] = sum_k w[c, k] du[b, s - k + left, c]
//   per block of positions of one batch element, partial sums of dw[c, k] = sum_t du[t] x[t + k - left] and
//   dbias[c] = sum_t du[t]; the host adds the blocks in a fixed order (deterministic).
// One invocation per (batch element, block, channel), consecutive channels in consecutive invocations, walks its
// block in order with the last K inputs and the last K du in registers: each x and dy is read once (plus K - 1 of
// halo), where one invocation per dx and another pass for the partials read every x K (K + 1) times; its loads are
// issued STEP positions at a time, so that one walk keeps several in flight. As in the forward,
// x is read and dx written in place in columns of wider rows (x_stride / x_col, dx_stride / dx_col), and dy comes cut
// by channel from up to three tensors (the SSD's dx, dB and dC): [0, split1), [split1, split2), [split2, C).
// FOLD_ABSMAX (fp32 dx): the largest |dx| also goes into absmax_out[0] (fold_absmax.glsl), for the fused projection's
// gradient's f16 tensor-core operands.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint K = 4;
layout(constant_id = 2) const uint SILU = 0;
layout(constant_id = 3) const bool FOLD_ABSMAX = false;
const uint STEP = 8;   // positions whose loads are issued together

// dy's parts are bf16 in the TENSORS_BF16 variants (the SSD's dx, dB and dC on bf16 tensors), x in the IN_BF16 ones
// (the fused projection's output in bf16).
#include "tensor_elems.glsl"
layout(std430, binding = 0) readonly buffer Dy0 { TENSOR_ELEM dy0[]; };
layout(std430, binding = 1) readonly buffer X { IN_ELEM x[]; };
layout(std430, binding = 2) readonly buffer W { float w[]; };
layout(std430, binding = 3) readonly buffer Bias { float bias[]; };
#ifdef OUT_BF16
#include "bf16_store.glsl"
layout(std430, binding = 4) writeonly buffer Dx { uint16_t dx16[]; };   // dx as bf16 bits (a variant)
#define STORE_DX(i, v) BF16_STORE(dx16, i, v)
#else
layout(std430, binding = 4) writeonly buffer Dx { float dx[]; };
#define STORE_DX(i, v) dx[i] = (v)
#endif
layout(std430, binding = 5) writeonly buffer DwPart { float dw_part[]; };   // (b, blocks, channels, K)
layout(std430, binding = 6) writeonly buffer DbPart { float db_part[]; };   // (b, blocks, channels)
layout(std430, binding = 7) readonly buffer Dy1 { TENSOR_ELEM dy1[]; };
layout(std430, binding = 8) readonly buffer Dy2 { TENSOR_ELEM dy2[]; };
layout(std430, binding = 9) buffer AbsMax { uint absmax_out[]; };   // FOLD_ABSMAX
#include "fold_absmax.glsl"

layout(push_constant) uniform Push {
    uint batch, seqlen, channels, left, has_bias, block_rows;
    uint x_stride, x_col, dx_stride, dx_col, split1, split2;
} p;

// dy[row, c] from the part that holds channel c.
float dy_at(uint row, uint c) {
    if (c < p.split1) {
        return TENSOR_LOAD(dy0, row * p.split1 + c);
    }
    if (c < p.split2) {
        return TENSOR_LOAD(dy1, row * (p.split2 - p.split1) + c - p.split1);
    }
    return TENSOR_LOAD(dy2, row * (p.channels - p.split2) + c - p.split2);
}

void main() {
    const uint blocks = (p.seqlen + p.block_rows - 1) / p.block_rows;
    uint largest = 0u;
    GRID_STRIDE_LOOP(e, p.batch * blocks * p.channels) {
        const uint c = e % p.channels;
        const uint bb = e / p.channels;
        const uint blk = bb % blocks;
        const uint b = bb / blocks;
        const int s0 = int(blk * p.block_rows);
        const int s1 = int(min(blk * p.block_rows + p.block_rows, p.seqlen));
        const int L = int(p.seqlen);
        const int left = int(p.left);
        const uint xbase = b * p.seqlen * p.x_stride + p.x_col + c;     // (b, 0, c) of x
        const uint dxbase = b * p.seqlen * p.dx_stride + p.dx_col + c;  // and of dx
        float wk[K];
        float win[K];   // win[k] = x[t + k - left] for the current t
        float ring[K];  // ring[k] = du[t - k]
        [[unroll]] for (uint k = 0; k < K; ++k) {
            wk[k] = w[c * K + k];
            ring[k] = 0.0;
        }
        const float b0 = p.has_bias != 0u ? bias[c] : 0.0;
        // du is needed from the first t any dx of the block reads (s0 - (K - 1) + left) to the last (s1 - 1 + left).
        const int t0 = s0 - int(K) + 1 + left;
        [[unroll]] for (uint k = 0; k + 1 < K; ++k) {
            const int s = t0 + int(k) - left;
            win[k + 1] = s >= 0 && s < L ? IN_LOAD(x, xbase + uint(s) * p.x_stride) : 0.0;
        }
        float dwk[K];
        [[unroll]] for (uint k = 0; k < K; ++k) {
            dwk[k] = 0.0;
        }
        float db = 0.0;
        const int tEnd = s1 + left;
        for (int tb = t0; tb < tEnd; tb += int(STEP)) {
            // The step's loads first, all independent: STEP of them in flight instead of one per position.
            float xs[STEP];
            float dys[STEP];
            [[unroll]] for (uint i = 0; i < STEP; ++i) {
                const int t = tb + int(i);
                const int sNew = t + int(K) - 1 - left;
                xs[i] = t < tEnd && sNew >= 0 && sNew < L ? IN_LOAD(x, xbase + uint(sNew) * p.x_stride) : 0.0;
                dys[i] = t < tEnd && t >= 0 && t < L ? dy_at(b * p.seqlen + uint(t), c) : 0.0;
            }
            [[unroll]] for (uint i = 0; i < STEP; ++i) {
                const int t = tb + int(i);
                if (t >= tEnd) {
                    break;
                }
                [[unroll]] for (uint k = 0; k + 1 < K; ++k) {
                    win[k] = win[k + 1];
                }
                win[K - 1] = xs[i];
                float d = 0.0;
                if (t >= 0 && t < L) {
                    d = dys[i];
                    if (SILU != 0) {
                        float u = b0;
                        [[unroll]] for (uint k = 0; k < K; ++k) {
                            u = fma(wk[k], win[k], u);
                        }
                        const float sg = 1.0 / (1.0 + exp(-u));
                        d *= sg * (1.0 + u * (1.0 - sg));
                    }
                }
                if (t >= s0 && t < s1) {
                    db += d;
                    [[unroll]] for (uint k = 0; k < K; ++k) {
                        dwk[k] = fma(d, win[k], dwk[k]);
                    }
                }
                [[unroll]] for (uint k = K - 1; k > 0; --k) {
                    ring[k] = ring[k - 1];
                }
                ring[0] = d;
                const int s = t - left;   // its dx reads du[s - k + left] = du[t - k]: all in the ring now
                if (s >= s0) {
                    float v = 0.0;
                    [[unroll]] for (uint k = 0; k < K; ++k) {
                        v = fma(wk[k], ring[k], v);
                    }
                    STORE_DX(dxbase + uint(s) * p.dx_stride, v);
                    largest = fold_value(largest, v);
                }
            }
        }
        [[unroll]] for (uint k = 0; k < K; ++k) {
            dw_part[e * K + k] = dwk[k];
        }
        db_part[e] = db;
    }
    fold_absmax(largest);
}
