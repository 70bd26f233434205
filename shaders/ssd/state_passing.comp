#version 450
// SSD stage 3, state_passing: walks the chunks in order for every (batch, head, state element),
//   S_in(0) = initial state (or 0),  S_in(c) = exp(dA_cs[c-1][last]) S_in(c-1) + states[c-1],
// replacing states[c] in place by S_in(c) (what chunk_scan reads) and writing the final state.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"
#include "ssd_common.glsl"

layout(local_size_x_id = 0) in;

layout(std430, binding = 0) buffer States { float states[]; };
layout(std430, binding = 1) readonly buffer DaCs { float dA_cs[]; };
layout(std430, binding = 2) readonly buffer Initial { float initial_states[]; };
layout(std430, binding = 3) writeonly buffer Final { float final_states[]; };

layout(push_constant) uniform Push {
    uint batch, seqlen, nheads, headdim, dstate, chunk, nchunks;
    uint flags;   // SsdFlags (ssd_flags.glsl)
} p;

void main() {
    const uint pn = p.headdim * p.dstate;
    GRID_STRIDE_LOOP(e, p.batch * p.nheads * pn) {
        const uint bh = e / pn;
        const uint k = e % pn;
        const uint head = bh % p.nheads;
        const uint b = bh / p.nheads;
        float s = SSD_HAS(p.flags, SSD_INITIAL_STATES) ? initial_states[e] : 0.0;
        // Chunks in groups of CG: every load of a group is issued before the chain of updates that needs them (a
        // store to states may alias a later load as far as the compiler knows, which serialized them).
        const uint CG = 8;
        for (uint c0 = 0; c0 < p.nchunks; c0 += CG) {
            float own[CG];
            float decay[CG];
            [[unroll]] for (uint i = 0; i < CG; ++i) {
                const uint c = c0 + i;
                own[i] = 0.0;
                decay[i] = 0.0;
                if (c < p.nchunks) {
                    own[i] = states[((b * p.nchunks + c) * p.nheads + head) * pn + k];
                    const uint len = chunk_span(c, p.chunk, p.nchunks, p.seqlen, SSD_HAS(p.flags, SSD_MIRRORED)).len;
                    decay[i] = dA_cs[(bh * p.nchunks + c) * p.chunk + len - 1];
                }
            }
            [[unroll]] for (uint i = 0; i < CG; ++i) {
                const uint c = c0 + i;
                if (c < p.nchunks) {
                    states[((b * p.nchunks + c) * p.nheads + head) * pn + k] = s;
                    s = exp(decay[i]) * s + own[i];
                }
            }
        }
        final_states[e] = s;
    }
}
