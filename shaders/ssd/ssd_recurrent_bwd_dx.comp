#version 450
// SSD backward in its recurrent form, dx: one invocation per state row p walking the sequence backwards with the
// row of the state gradient dS (NB columns at a time, as ssd_recurrent.comp),
//   dS[p, :] = exp(dt_{t+1} A) dS[p, :] + g_t[p] C_t ;  dx_t[p] = dt_t dS[p, :] . B_t + D g_t[p]
// starting from d final_states, and d initial_states = exp(dt_0 A) dS after the first position. g is dy times
// silu(z) when gated (chunk_scan_bwd_dz), else dy.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"
#include "ssd_common.glsl"
#include "ssd_recurrent.glsl"

layout(local_size_x_id = 0) in;                  // rows per workgroup
layout(constant_id = 1) const uint NB = 16;      // state columns per invocation and walk
layout(constant_id = 2) const uint SG = 0;       // fixed subgroup size for lane-shared loads, or 0 (ssd_recurrent.glsl)

layout(std430, binding = 0) readonly buffer G { float g[]; };
layout(std430, binding = 1) readonly buffer Bm { float B[]; };
layout(std430, binding = 2) readonly buffer Cm { float C[]; };
layout(std430, binding = 3) readonly buffer DtOut { float dt_out[]; };
layout(std430, binding = 4) readonly buffer AVec { float A[]; };
layout(std430, binding = 5) readonly buffer Dv { float D[]; };
layout(std430, binding = 6) readonly buffer DFinal { float dfinal[]; };
layout(std430, binding = 7) buffer Dx { float dx[]; };
layout(std430, binding = 8) writeonly buffer DInitial { float dinitial[]; };

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
    for (uint w = gl_WorkGroupID.x; w < items; w += gl_NumWorkGroups.x) {
        const uint bh = w / rowBlocks;
        const uint head = bh % p.nheads;
        const uint b = bh / p.nheads;
        const uint grp = head / (p.nheads / p.ngroups);
        const uint row = (w % rowBlocks) * W + gl_LocalInvocationID.x;
        const bool live = row < p.headdim;
        const uint r = min(row, p.headdim - 1u);
        const float a = A[head];
        const float skip = !SSD_HAS(p.flags, SSD_D_ANY) ? 0.0 : D[SSD_HAS(p.flags, SSD_D_HEAD_DIM) ? head * p.headdim + r : head];

        for (uint cb = 0; cb < colBlocks; ++cb) {
            const uint n0 = cb * NB;
            const uint cols = min(NB, p.dstate - n0);
            float dS[NB];
            [[unroll]] for (uint j = 0; j < NB; ++j) {
                dS[j] = SSD_HAS(p.flags, SSD_D_FINAL_STATES) && j < cols ? dfinal[(bh * p.headdim + r) * p.dstate + n0 + j] : 0.0;
            }
            float a_next = 1.0;   // exp(dt A) of the position walked before (later in the sequence)
            for (uint c = p.nchunks; c-- > 0;) {
                const ChunkSpan span = chunk_span(c, p.chunk, p.nchunks, p.seqlen, mirror);
                const uint cs = (bh * p.nchunks + c) * p.chunk;
                for (uint k1 = span.len; k1 > 0;) {
                    // The SHARE positions ending at k1, one dt per lane.
                    const uint k0 = k1 > SHARE ? k1 - SHARE : 0u;
                    float dt_l[1];
                    SHARED_LOAD(dt_l, dt_out, cs + k0, k1 - k0);
                    const float decay_l = step_decay(dt_l[0] * a);
                    for (uint i = k1 - k0; i-- > 0;) {
                        const uint k = k0 + i;
                        const uint tok = b * p.seqlen + span_pos(span, k);
                        const float dtv = SG == 0u ? dt_out[cs + k] : subgroupBroadcast(dt_l[0], i);
                        const float decay = SG == 0u ? step_decay(dtv * a) : subgroupBroadcast(decay_l, i);
                        const uint o = (tok * p.nheads + head) * p.headdim + r;
                        const float gv = g[o];
                        const uint bc = (tok * p.ngroups + grp) * p.dstate + n0;
                        float b_l[SHARED_COUNT(NB)], c_l[SHARED_COUNT(NB)];
                        SHARED_LOAD(b_l, B, bc, cols);
                        SHARED_LOAD(c_l, C, bc, cols);
                        float acc = 0.0;
                        [[unroll]] for (uint j = 0; j < NB; ++j) {
                            const bool in_state = j < cols;
                            const float bj = SG != 0u ? SHARED_GET(b_l, j) : in_state ? B[bc + j] : 0.0;
                            const float cj = SG != 0u ? SHARED_GET(c_l, j) : in_state ? C[bc + j] : 0.0;
                            dS[j] = fma(a_next, dS[j], gv * cj);
                            acc = fma(dS[j], bj, acc);
                        }
                        a_next = decay;
                        if (live) {
                            float v = dtv * acc;
                            if (cb > 0u) {
                                v += dx[o];
                            }
                            if (cb + 1u == colBlocks) {
                                v = fma(skip, gv, v);
                            }
                            dx[o] = v;
                        }
                    }
                    k1 = k0;
                }
            }
            if (live && SSD_HAS(p.flags, SSD_D_INITIAL_STATES)) {
                [[unroll]] for (uint j = 0; j < NB; ++j) {
                    if (j < cols) {
                        dinitial[(bh * p.headdim + r) * p.dstate + n0 + j] = a_next * dS[j];
                    }
                }
            }
        }
    }
}
