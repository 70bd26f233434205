#version 450
// SSD forward in its recurrent form, for CPU drivers: one invocation per row p of the state, walking the sequence,
//   S[p, :] = exp(dt_t A) S[p, :] + dt_t x_t[p] B_t ;  y_t[p] = S[p, :] . C_t + D x_t[p] ;  y_t *= silu(z_t) if z
// The row lives in registers (NB columns at a time; wider states walk the sequence once per column block, adding
// into y). A workgroup shares one (batch, head), so dt_t, B_t and C_t are uniform loads, and nothing crosses
// invocations: no shared memory, no barriers (on llvmpipe the tiled kernels' per-lane shared-memory traffic and
// barriers cost ~100x their arithmetic). Writes what the tiled path writes: the state entering each chunk (what
// the backward reads), the final state, y before the gate.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"
#include "ssd_common.glsl"
#include "ssd_recurrent.glsl"

layout(local_size_x_id = 0) in;                  // rows per workgroup
layout(constant_id = 1) const uint NB = 16;      // state columns per invocation and walk
layout(constant_id = 2) const uint SG = 0;       // fixed subgroup size for lane-shared loads, or 0 (ssd_recurrent.glsl)

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer Bm { float B[]; };
layout(std430, binding = 2) readonly buffer Cm { float C[]; };
layout(std430, binding = 3) readonly buffer DtOut { float dt_out[]; };   // (b, h, nchunks, Q), from chunk_cumsum
layout(std430, binding = 4) readonly buffer AVec { float A[]; };
layout(std430, binding = 5) readonly buffer Dv { float D[]; };
layout(std430, binding = 6) readonly buffer Z { float z[]; };
layout(std430, binding = 7) buffer Y { float y[]; };
layout(std430, binding = 8) buffer YPre { float y_pre[]; };
layout(std430, binding = 9) writeonly buffer States { float states[]; };
layout(std430, binding = 10) readonly buffer Initial { float initial_states[]; };
layout(std430, binding = 11) writeonly buffer Final { float final_states[]; };

layout(push_constant) uniform Push {
    uint batch, seqlen, nheads, ngroups, headdim, dstate, chunk, nchunks;
    uint flags;   // SsdFlags (ssd_flags.glsl)
} p;

void main() {
    const uint W = gl_WorkGroupSize.x;
    const uint rowBlocks = (p.headdim + W - 1) / W;
    const uint items = p.batch * p.nheads * rowBlocks;
    const uint colBlocks = (p.dstate + NB - 1) / NB;
    const bool mirror = SSD_HAS(p.flags, SSD_MIRRORED);
    const bool gated = SSD_HAS(p.flags, SSD_Z);
    for (uint w = gl_WorkGroupID.x; w < items; w += gl_NumWorkGroups.x) {
        const uint bh = w / rowBlocks;
        const uint head = bh % p.nheads;
        const uint b = bh / p.nheads;
        const uint grp = head / (p.nheads / p.ngroups);
        const uint row = (w % rowBlocks) * W + gl_LocalInvocationID.x;
        const bool live = row < p.headdim;
        const uint r = min(row, p.headdim - 1u);   // inactive lanes compute on a valid row and write nothing
        const float a = A[head];
        const float skip = !SSD_HAS(p.flags, SSD_D_ANY) ? 0.0 : D[SSD_HAS(p.flags, SSD_D_HEAD_DIM) ? head * p.headdim + r : head];

        for (uint cb = 0; cb < colBlocks; ++cb) {
            const uint n0 = cb * NB;
            const bool first = cb == 0u;
            const bool last = cb + 1u == colBlocks;
            float S[NB];
            [[unroll]] for (uint j = 0; j < NB; ++j) {
                S[j] = SSD_HAS(p.flags, SSD_INITIAL_STATES) && n0 + j < p.dstate ? initial_states[(bh * p.headdim + r) * p.dstate + n0 + j] : 0.0;
            }
            for (uint c = 0; c < p.nchunks; ++c) {
                const ChunkSpan span = chunk_span(c, p.chunk, p.nchunks, p.seqlen, mirror);
                if (live) {
                    const uint so = (((b * p.nchunks + c) * p.nheads + head) * p.headdim + r) * p.dstate + n0;
                    [[unroll]] for (uint j = 0; j < NB; ++j) {
                        if (n0 + j < p.dstate) {
                            states[so + j] = S[j];
                        }
                    }
                }
                const uint cs = (bh * p.nchunks + c) * p.chunk;
                for (uint k0 = 0; k0 < span.len; k0 += SHARE) {
                    // dt and the decay of the next SHARE steps, one per lane.
                    float dt_l[1], decay_l[1];
                    SHARED_LOAD(dt_l, dt_out, cs + k0, span.len - k0);
                    decay_l[0] = step_decay(dt_l[0] * a);
                    const uint steps = min(SHARE, span.len - k0);
                    for (uint i = 0; i < steps; ++i) {
                        const uint k = k0 + i;
                        const uint tok = b * p.seqlen + span_pos(span, k);
                        const float dtv = SG == 0u ? dt_out[cs + k] : subgroupBroadcast(dt_l[0], i);
                        const float decay = SG == 0u ? step_decay(dtv * a) : subgroupBroadcast(decay_l[0], i);
                        const uint o = (tok * p.nheads + head) * p.headdim + r;
                        const float xv = x[o];
                        const float u = dtv * xv;
                        const uint bc = (tok * p.ngroups + grp) * p.dstate + n0;
                        const uint cols = min(NB, p.dstate - n0);
                        float b_l[SHARED_COUNT(NB)], c_l[SHARED_COUNT(NB)];
                        SHARED_LOAD(b_l, B, bc, cols);
                        SHARED_LOAD(c_l, C, bc, cols);
                        float acc = 0.0;
                        [[unroll]] for (uint j = 0; j < NB; ++j) {
                            const bool in_state = j < cols;
                            const float bj = SG != 0u ? SHARED_GET(b_l, j) : in_state ? B[bc + j] : 0.0;
                            const float cj = SG != 0u ? SHARED_GET(c_l, j) : in_state ? C[bc + j] : 0.0;
                            S[j] = fma(decay, S[j], u * bj);
                            acc = fma(S[j], cj, acc);
                        }
                        if (live) {
                            // Column blocks after the first add into y before the gate; the last finishes it.
                            if (!first) {
                                acc += gated ? y_pre[o] : y[o];
                            }
                            if (last) {
                                acc = fma(skip, xv, acc);
                                if (gated) {
                                    y_pre[o] = acc;
                                    acc *= silu(z[o]);
                                }
                                y[o] = acc;
                            } else if (gated) {
                                y_pre[o] = acc;
                            } else {
                                y[o] = acc;
                            }
                        }
                    }
                }
            }
            if (live) {
                [[unroll]] for (uint j = 0; j < NB; ++j) {
                    if (n0 + j < p.dstate) {
                        final_states[(bh * p.headdim + r) * p.dstate + n0 + j] = S[j];
                    }
                }
            }
        }
    }
}
