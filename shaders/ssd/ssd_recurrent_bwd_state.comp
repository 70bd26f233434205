#version 450
// SSD backward in its recurrent form, the state-side gradients: one invocation per state column n holding PB rows
// of the state S and of its gradient dS, walking each chunk backwards. For every position t, per head:
//   V[t, n] = sum_p g_t[p] S_t[p, n]                        (dC_t, before the sum over a group's heads)
//   U[t, n] = sum_p x_t[p] dS_t[p, n]                       (dB_t / dt_t; and B_t . U[t] is dt_t's direct gradient)
//   R[t, n] = exp(dt_t A) sum_p dS_t[p, n] S_{t-1}[p, n]    (summed over n: the gradient of dt_t A)
// with dS_t = exp(dt_{t+1} A) dS_{t+1} + g_t C_t^T. R is a direct product (no difference of large sums), so it
// needs S_{t-1} while walking backwards: each chunk is recomputed forward from the state entering it (the forward
// wrote it) with a checkpoint every K steps, then each K-step sub-chunk once more, its states kept in registers
// (the K loop is unrolled), never by dividing by exp(dt A). Further row blocks add into V, U and R.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"
#include "ssd_common.glsl"
#include "ssd_recurrent.glsl"

layout(local_size_x_id = 0) in;                  // state columns per workgroup
layout(constant_id = 1) const uint PB = 16;      // state rows per invocation and walk
layout(constant_id = 2) const uint K = 8;        // steps per sub-chunk
layout(constant_id = 3) const uint KC = 8;       // sub-chunks per chunk, ceil(Q / K)
layout(constant_id = 4) const uint SG = 0;       // fixed subgroup size for lane-shared loads, or 0 (ssd_recurrent.glsl)

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer G { float g[]; };
layout(std430, binding = 2) readonly buffer Bm { float B[]; };
layout(std430, binding = 3) readonly buffer Cm { float C[]; };
layout(std430, binding = 4) readonly buffer DtOut { float dt_out[]; };
layout(std430, binding = 5) readonly buffer AVec { float A[]; };
layout(std430, binding = 6) readonly buffer States { float states[]; };   // (b, nchunks, h, p, n): entering each chunk
layout(std430, binding = 7) readonly buffer DFinal { float dfinal[]; };
layout(std430, binding = 8) buffer Vb { float V[]; };   // (b, L, h, n), at sequence positions
layout(std430, binding = 9) buffer Ub { float U[]; };
layout(std430, binding = 10) buffer Rb { float R[]; };

layout(push_constant) uniform Push {
    uint batch, seqlen, nheads, ngroups, headdim, dstate, chunk, nchunks;
    uint flags;   // SsdFlags (ssd_flags.glsl)
} p;

void main() {
    const uint W = gl_WorkGroupSize.x;
    const uint colBlocks = (p.dstate + W - 1) / W;
    const uint items = p.batch * p.nheads * colBlocks;
    const uint rowBlocks = (p.headdim + PB - 1) / PB;
    const bool mirror = SSD_HAS(p.flags, SSD_MIRRORED);
    for (uint w = gl_WorkGroupID.x; w < items; w += gl_NumWorkGroups.x) {
        const uint bh = w / colBlocks;
        const uint head = bh % p.nheads;
        const uint b = bh / p.nheads;
        const uint grp = head / (p.nheads / p.ngroups);
        const uint col = (w % colBlocks) * W + gl_LocalInvocationID.x;
        const bool live = col < p.dstate;
        const uint n = min(col, p.dstate - 1u);
        const float a = A[head];

        for (uint rb = 0; rb < rowBlocks; ++rb) {
            const uint p0 = rb * PB;
            const uint rows = min(PB, p.headdim - p0);
            float dS[PB];
            [[unroll]] for (uint i = 0; i < PB; ++i) {
                dS[i] = SSD_HAS(p.flags, SSD_D_FINAL_STATES) && i < rows ? dfinal[(bh * p.headdim + p0 + i) * p.dstate + n] : 0.0;
            }
            float a_next = 1.0;
            for (uint c = p.nchunks; c-- > 0;) {
                const ChunkSpan span = chunk_span(c, p.chunk, p.nchunks, p.seqlen, mirror);
                const uint cs = (bh * p.nchunks + c) * p.chunk;
                const uint subs = (span.len + K - 1) / K;
                const uint so = ((b * p.nchunks + c) * p.nheads + head) * p.headdim + p0;
                float S[PB];
                [[unroll]] for (uint i = 0; i < PB; ++i) {
                    S[i] = i < rows ? states[(so + i) * p.dstate + n] : 0.0;
                }
                // Checkpoints: the state before each sub-chunk.
                float ck[KC * PB];
                for (uint sb = 0; sb < subs; ++sb) {
                    [[unroll]] for (uint i = 0; i < PB; ++i) {
                        ck[sb * PB + i] = S[i];
                    }
                    if (sb + 1u == subs) {
                        break;
                    }
                    for (uint k = sb * K; k < sb * K + K; ++k) {
                        const uint tok = b * p.seqlen + span_pos(span, k);
                        const float dtv = dt_out[cs + k];
                        const float decay = step_decay(dtv * a);
                        const float u = dtv * B[(tok * p.ngroups + grp) * p.dstate + n];
                        const uint xo = (tok * p.nheads + head) * p.headdim + p0;
                        float x_l[SHARED_COUNT(PB)];
                        SHARED_LOAD(x_l, x, xo, rows);
                        [[unroll]] for (uint i = 0; i < PB; ++i) {
                            const float xi = SG != 0u ? SHARED_GET(x_l, i) : i < rows ? x[xo + i] : 0.0;
                            S[i] = fma(decay, S[i], u * xi);
                        }
                    }
                }
                for (uint sb = subs; sb-- > 0;) {
                    const uint s0 = sb * K;
                    // The sub-chunk's states, forward; V on the way.
                    float Hs[K * PB];
                    // This pass's lane-shared x and g and each step's C, kept for the backward pass (registers: K is unrolled).
                    float xs[K * SHARED_COUNT(PB)], gs[K * SHARED_COUNT(PB)], cs_n[K];
                    [[unroll]] for (uint i = 0; i < PB; ++i) {
                        S[i] = ck[sb * PB + i];
                    }
                    [[unroll]] for (uint kk = 0; kk < K; ++kk) {
                        const uint k = s0 + kk;
                        if (k < span.len) {
                            const uint tok = b * p.seqlen + span_pos(span, k);
                            const float dtv = dt_out[cs + k];
                            const float decay = step_decay(dtv * a);
                            const float u = dtv * B[(tok * p.ngroups + grp) * p.dstate + n];
                            const uint xo = (tok * p.nheads + head) * p.headdim + p0;
                            float x_l[SHARED_COUNT(PB)], g_l[SHARED_COUNT(PB)];
                            SHARED_LOAD(x_l, x, xo, rows);
                            SHARED_LOAD(g_l, g, xo, rows);
                            [[unroll]] for (uint s = 0; s < SHARED_COUNT(PB); ++s) {
                                xs[kk * SHARED_COUNT(PB) + s] = x_l[s];
                                gs[kk * SHARED_COUNT(PB) + s] = g_l[s];
                            }
                            cs_n[kk] = C[(tok * p.ngroups + grp) * p.dstate + n];
                            float v = 0.0;
                            [[unroll]] for (uint i = 0; i < PB; ++i) {
                                const float xi = SG != 0u ? SHARED_GET(x_l, i) : i < rows ? x[xo + i] : 0.0;
                                const float gi = SG != 0u ? SHARED_GET(g_l, i) : i < rows ? g[xo + i] : 0.0;
                                S[i] = fma(decay, S[i], u * xi);
                                Hs[kk * PB + i] = S[i];
                                v = fma(gi, S[i], v);
                            }
                            if (live) {
                                const uint vo = (tok * p.nheads + head) * p.dstate + n;
                                V[vo] = rb == 0u ? v : V[vo] + v;
                            }
                        }
                    }
                    // Backwards through the sub-chunk: dS, U and R.
                    [[unroll]] for (uint kq = 0; kq < K; ++kq) {
                        const uint kk = K - 1u - kq;
                        const uint k = s0 + kk;
                        if (k < span.len) {
                            const uint tok = b * p.seqlen + span_pos(span, k);
                            const float decay = step_decay(dt_out[cs + k] * a);
                            const float cn = cs_n[kk];
                            const uint xo = (tok * p.nheads + head) * p.headdim + p0;
                            float x_l[SHARED_COUNT(PB)], g_l[SHARED_COUNT(PB)];
                            [[unroll]] for (uint s = 0; s < SHARED_COUNT(PB); ++s) {
                                x_l[s] = xs[kk * SHARED_COUNT(PB) + s];
                                g_l[s] = gs[kk * SHARED_COUNT(PB) + s];
                            }
                            float uu = 0.0;
                            float rr = 0.0;
                            [[unroll]] for (uint i = 0; i < PB; ++i) {
                                const float xi = SG != 0u ? SHARED_GET(x_l, i) : i < rows ? x[xo + i] : 0.0;
                                const float gi = SG != 0u ? SHARED_GET(g_l, i) : i < rows ? g[xo + i] : 0.0;
                                dS[i] = fma(a_next, dS[i], gi * cn);
                                uu = fma(xi, dS[i], uu);
                                rr = fma(dS[i], kk == 0u ? ck[sb * PB + i] : Hs[(kk == 0u ? 0u : kk - 1u) * PB + i], rr);
                            }
                            a_next = decay;
                            if (live) {
                                const uint vo = (tok * p.nheads + head) * p.dstate + n;
                                U[vo] = rb == 0u ? uu : U[vo] + uu;
                                R[vo] = rb == 0u ? decay * rr : R[vo] + decay * rr;
                            }
                        }
                    }
                }
            }
        }
    }
}
