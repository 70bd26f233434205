#version 450
// SSD stage 2, chunk_state: each chunk's own contribution to the state,
//   states[b, c, h, p, n] = sum_{s in c} exp(dA_cs[last] - dA_cs[s]) * dt_out[s] * x[s, p] * B[s, n],
// a (p x Q) (Q x n) product per (batch, chunk, head). A workgroup of 256 invocations (16 x 16) computes a BM x BN
// tile of (p, n), staging BK positions at a time in shared memory with the decay weight folded into x.
// GRAD = 1 computes the backward's per-chunk state gradient instead (x <- g = gated dy, B <- C):
//   dstates[b, c, h, p, n] = sum_{t in c} exp(dA_cs[t]) g[t, p] C[t, n]
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"
#include "ssd_common.glsl"

layout(local_size_x = 256) in;
layout(constant_id = 0) const uint BM = 64;   // headdim tile (multiple of 16)
layout(constant_id = 1) const uint BN = 64;   // d_state tile (multiple of 16)
layout(constant_id = 2) const uint BK = 32;   // positions per stage
layout(constant_id = 3) const uint GRAD = 0;   // 1: the backward's weights (above)
layout(constant_id = 4) const uint G_SHIFT = 0;   // GRAD: g read one step away (g_at)

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer Bm { float B[]; };
layout(std430, binding = 2) readonly buffer DtOut { float dt_out[]; };
layout(std430, binding = 3) readonly buffer DaCs { float dA_cs[]; };
layout(std430, binding = 4) writeonly buffer States { float states[]; };
layout(std430, binding = 5) readonly buffer DaCsLo { float dA_cs_lo[]; };

layout(push_constant) uniform Push {
    uint batch, seqlen, nheads, ngroups, headdim, dstate, chunk, nchunks;
    uint flags;   // SsdFlags (ssd_flags.glsl)
} p;

const uint TM = BM / 16;
const uint TN = BN / 16;
shared float Xs[BK * BM];   // Xs[s][p], weighted
shared float Bs[BK * BN];   // Bs[s][n]

void main() {
    const uint tid = gl_LocalInvocationID.x;
    const uint tx = tid % 16;   // columns (n): tx + 16 j
    const uint ty = tid / 16;   // rows (p): ty * TM + i
    const uint tilesP = (p.headdim + BM - 1) / BM;
    const uint tilesN = (p.dstate + BN - 1) / BN;
    const uint items = tilesP * tilesN * p.nchunks * p.batch * p.nheads;
    const uint hpg = p.nheads / p.ngroups;

    for (uint w = gl_WorkGroupID.x; w < items; w += gl_NumWorkGroups.x) {
        uint r = w;
        const uint tn = r % tilesN; r /= tilesN;
        const uint tp = r % tilesP; r /= tilesP;
        const uint c = r % p.nchunks; r /= p.nchunks;
        if (GRAD != 0 && first_chunk_state_grad_unused(c, p.flags)) {
            continue;   // uniform
        }
        const uint head = r % p.nheads;
        const uint b = r / p.nheads;
        const uint grp = head / hpg;
        const uint p0 = tp * BM;
        const uint n0 = tn * BN;
        const ChunkSpan span = chunk_span(c, p.chunk, p.nchunks, p.seqlen, SSD_HAS(p.flags, SSD_MIRRORED));
        const uint len = span.len;
        const uint cs = ((b * p.nheads + head) * p.nchunks + c) * p.chunk;
        const float last = dA_cs[cs + len - 1];
        const float last_lo = dA_cs_lo[cs + len - 1];

        float acc[TM * TN];
        [[unroll]] for (uint i = 0; i < TM * TN; ++i) {
            acc[i] = 0.0;
        }

        for (uint s0 = 0; s0 < len; s0 += BK) {
            for (uint e = tid; e < BK * BM; e += 256) {
                const uint s = e / BM;
                const uint j = e % BM;
                float v = 0.0;
                uint pos;
                if (s0 + s < len && p0 + j < p.headdim && g_at(span_pos(span, s0 + s), GRAD == 0 ? 0 : G_SHIFT, p.seqlen, pos)) {
                    const uint k = cs + s0 + s;
                    const float weight = GRAD == 0 ? exp(min(cs_diff(last, last_lo, dA_cs[k], dA_cs_lo[k]), 0.0)) * dt_out[k]
                                                   : exp(min(dA_cs[k], 0.0));
                    v = x[((b * p.seqlen + pos) * p.nheads + head) * p.headdim + p0 + j] * weight;
                }
                Xs[e] = v;
            }
            for (uint e = tid; e < BK * BN; e += 256) {
                const uint s = e / BN;
                const uint j = e % BN;
                float v = 0.0;
                if (s0 + s < len && n0 + j < p.dstate) {
                    const uint pos = span_pos(span, s0 + s);
                    v = B[((b * p.seqlen + pos) * p.ngroups + grp) * p.dstate + n0 + j];
                }
                Bs[e] = v;
            }
            barrier();
            [[unroll]] for (uint k = 0; k < BK; ++k) {
                float a[TM];
                float bb[TN];
                [[unroll]] for (uint i = 0; i < TM; ++i) {
                    a[i] = Xs[k * BM + ty * TM + i];
                }
                [[unroll]] for (uint j = 0; j < TN; ++j) {
                    bb[j] = Bs[k * BN + tx + 16 * j];
                }
                [[unroll]] for (uint i = 0; i < TM; ++i) {
                    [[unroll]] for (uint j = 0; j < TN; ++j) {
                        acc[i * TN + j] = fma(a[i], bb[j], acc[i * TN + j]);
                    }
                }
            }
            barrier();
        }

        const uint base = ((b * p.nchunks + c) * p.nheads + head) * p.headdim;
        [[unroll]] for (uint i = 0; i < TM; ++i) {
            const uint pi = p0 + ty * TM + i;
            [[unroll]] for (uint j = 0; j < TN; ++j) {
                const uint nj = n0 + tx + 16 * j;
                if (pi < p.headdim && nj < p.dstate) {
                    states[(base + pi) * p.dstate + nj] = acc[i * TN + j];
                }
            }
        }
    }
}
