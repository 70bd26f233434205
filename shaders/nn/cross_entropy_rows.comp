#version 450
// A linear head's cross-entropy rows in one pass over the logits (N, V), one workgroup per row: the row's loss pair
// (lse - l[target], counted) as cross_entropy.comp's MODE 0 gives it, optionally its argmax (argmax_rows.comp's
// answer), and optionally the gradient softmax(l) - onehot(target) (0 on ignored rows; the caller scales by dloss /
// count in its products): in place as fp32, or as the 16-bit operands a tensor-core GEMM reads (two to a word; V
// even, so no word straddles two rows). The streamed form reads a row twice: the second read finds it in the cache
// only where the rows in flight fit there (docs/DESIGN.md).
// Streamed, each invocation keeps a running max and a sum rescaled to it (online softmax); the workgroup combines
// them in a fixed order, so the result is deterministic on every device.
// QUADS (V a multiple of 4): each invocation reads and writes runs of four logits in one 16-byte access. HELD (with
// QUADS, where the row fits): each invocation keeps its up to HELD logits in registers, so the row is read once and
// the softmax needs no running rescale: its max, then exp(l - max) in place of each logit, then the gradient from those.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "bf16_bits.glsl"

layout(local_size_x_id = 0) in;   // a power of two
#include "row_sum.glsl"
#include "row_argmax.glsl"
#include "operand_scale.glsl"
layout(constant_id = 1) const uint GRADIENT = 0;   // 0 none, 1 fp32 in place, 2 f16 (scaled as a largest |x| of 1), 3 bf16, 4 bf16-rounded values as 2's f16
layout(constant_id = 2) const bool ARGMAX = false;
layout(constant_id = 3) const bool QUADS = false;
layout(constant_id = 4) const uint HELD = 0;   // 0, or the logits an invocation holds (a multiple of 4; QUADS)

layout(std430, binding = 0) buffer Logits { float logits[]; };
layout(std430, binding = 1) readonly buffer Targets { int targets[]; };
layout(std430, binding = 2) writeonly buffer Pairs { float pairs[]; };   // (N, 2): loss, counted
layout(std430, binding = 3) writeonly buffer ArgMax { int argmax_out[]; };
layout(std430, binding = 4) writeonly buffer Words { uint dwords[]; };  // GRADIENT 2-4: (N, V / 2)
layout(std430, binding = 5) buffer Status { uint status[]; };           // [0]: a target was out of range
layout(std430, binding = 0) buffer Logits4 { vec4 logits4[]; };          // QUADS: the same four at a time
layout(std430, binding = 4) writeonly buffer Words2 { uvec2 dwords2[]; };

layout(push_constant) uniform Push {
    uint rows, vocab;
    int ignore_index;
} p;

const float LOWEST = -3.402823466e38;

shared float red_max[gl_WorkGroupSize.x];

float row_max(float v) {
    const uint tid = gl_LocalInvocationID.x;
    red_max[tid] = v;
    barrier();
    for (uint h = gl_WorkGroupSize.x / 2; h > 0; h >>= 1) {
        if (tid < h) {
            red_max[tid] = max(red_max[tid], red_max[tid + h]);
        }
        barrier();
    }
    const float r = red_max[0];
    barrier();
    return r;
}

float grad(float l, uint j, float lse, int t, bool valid) {
    return valid ? exp(l - lse) - (int(j) == t ? 1.0 : 0.0) : 0.0;
}

vec4 grad4(vec4 l, uint j, float lse, int t, bool valid) {
    return vec4(grad(l.x, j, lse, t, valid), grad(l.y, j + 1, lse, t, valid), grad(l.z, j + 2, lse, t, valid), grad(l.w, j + 3, lse, t, valid));
}

// Two neighbours of the gradient as one word of 16-bit operands (GRADIENT 2-4).
uint operand_word(vec2 g, float f16_scale) {
    return GRADIENT == 3 ? bf16_bits(g.x) | (bf16_bits(g.y) << 16) : packHalf2x16(f16_scale * (GRADIENT == 4 ? bf16_round(g) : g));
}

// The online softmax's step for logit v at column j, and the running argmax.
void take(float v, uint j, inout float m, inout float s, inout float bv, inout uint bi) {
    if (v > m) {
        s = s * exp(m - v) + 1.0;
        m = v;
    } else {
        s += exp(v - m);   // NaN makes the sum, the loss and the gradient NaN, as PyTorch's
    }
    if (ARGMAX && beats(v, j, bv, bi)) {
        bv = v;
        bi = j;
    }
}

void main() {
    const uint tid = gl_LocalInvocationID.x;
    const float NEG_INF = uintBitsToFloat(0xFF800000u);   // pads a held row: exp(-inf - max) = 0
    for (uint row = gl_WorkGroupID.x; row < p.rows; row += gl_NumWorkGroups.x) {
        const uint base = row * p.vocab;
        float m = LOWEST;
        float s = 0.0;
        float bv = 0.0;
        uint bi = NONE;
        vec4 held[HELD / 4 + 1];
        if (HELD > 0) {
            [[unroll]] for (uint i = 0; i < HELD / 4; ++i) {
                const uint q = tid + i * gl_WorkGroupSize.x;
                held[i] = q < p.vocab / 4 ? logits4[base / 4 + q] : vec4(NEG_INF);
            }
            [[unroll]] for (uint i = 0; i < HELD / 4; ++i) {
                const uint q = tid + i * gl_WorkGroupSize.x;
                [[unroll]] for (uint k = 0; k < 4; ++k) {
                    m = max(m, held[i][k]);
                    if (ARGMAX && q < p.vocab / 4 && beats(held[i][k], 4 * q + k, bv, bi)) {
                        bv = held[i][k];
                        bi = 4 * q + k;
                    }
                }
            }
        } else if (QUADS) {
            for (uint q = tid; q < p.vocab / 4; q += gl_WorkGroupSize.x) {
                const vec4 v = logits4[base / 4 + q];
                [[unroll]] for (uint k = 0; k < 4; ++k) {
                    take(v[k], 4 * q + k, m, s, bv, bi);
                }
            }
        } else {
            for (uint j = tid; j < p.vocab; j += gl_WorkGroupSize.x) {
                take(logits[base + j], j, m, s, bv, bi);
            }
        }
        const float big = row_max(m);
        if (HELD > 0) {
            [[unroll]] for (uint i = 0; i < HELD / 4; ++i) {
                held[i] = exp(held[i] - big);   // NaN makes the sum, the loss and the gradient NaN, as PyTorch's
                s += (held[i].x + held[i].y) + (held[i].z + held[i].w);
            }
        }
        const float total = row_sum(HELD > 0 ? s : s * exp(m - big));
        const float lse = big + log(total);
        const int t = targets[row];
        const bool valid = t != p.ignore_index && t >= 0 && t < int(p.vocab);
        if (ARGMAX) {
            const uint best = row_argmax(bv, bi);
            if (tid == 0) {
                argmax_out[row] = best == NONE ? 0 : int(best);   // a row of NaN only: 0
            }
        }
        if (tid == 0) {
            if (t != p.ignore_index && !valid) {
                status[0] = 1u;
            }
            pairs[2 * row] = valid ? lse - logits[base + uint(t)] : 0.0;
            pairs[2 * row + 1] = valid ? 1.0 : 0.0;
        }
        // |softmax - onehot| <= 1: f16 operands take the scale of a largest |x| of 1 (the host sets the packed copy's
        // scale word to 1.0 to match).
        const float f16_scale = operand_scale(floatBitsToUint(1.0));
        const uint half_ = p.vocab / 2;
        if (HELD > 0 && GRADIENT != 0) {
            const float inv = 1.0 / total;
            if (GRADIENT == 1) {
                barrier();   // the target's logit is read above before it is overwritten
            }
            [[unroll]] for (uint i = 0; i < HELD / 4; ++i) {
                const uint q = tid + i * gl_WorkGroupSize.x;
                if (q < p.vocab / 4) {
                    vec4 g = vec4(0.0);
                    if (valid) {
                        g = held[i] * inv;
                        const int off = t - int(4 * q);
                        if (off >= 0 && off < 4) {
                            g[off] -= 1.0;
                        }
                    }
                    if (GRADIENT == 1) {
                        logits4[base / 4 + q] = g;
                    } else {
                        dwords2[row * half_ / 2 + q] = uvec2(operand_word(g.xy, f16_scale), operand_word(g.zw, f16_scale));
                    }
                }
            }
        } else if (GRADIENT == 1) {
            barrier();   // the target's logit is read above before it is overwritten
            if (QUADS) {
                for (uint q = tid; q < p.vocab / 4; q += gl_WorkGroupSize.x) {
                    logits4[base / 4 + q] = grad4(logits4[base / 4 + q], 4 * q, lse, t, valid);
                }
            } else {
                for (uint j = tid; j < p.vocab; j += gl_WorkGroupSize.x) {
                    logits[base + j] = grad(logits[base + j], j, lse, t, valid);
                }
            }
        } else if (GRADIENT >= 2) {
            if (QUADS) {
                for (uint q = tid; q < p.vocab / 4; q += gl_WorkGroupSize.x) {
                    const vec4 g = grad4(logits4[base / 4 + q], 4 * q, lse, t, valid);
                    dwords2[row * half_ / 2 + q] = uvec2(operand_word(g.xy, f16_scale), operand_word(g.zw, f16_scale));
                }
            } else {
                for (uint w = tid; w < half_; w += gl_WorkGroupSize.x) {
                    const vec2 g = vec2(grad(logits[base + 2 * w], 2 * w, lse, t, valid), grad(logits[base + 2 * w + 1], 2 * w + 1, lse, t, valid));
                    dwords[row * half_ + w] = operand_word(g, f16_scale);
                }
            }
        }
    }
}
