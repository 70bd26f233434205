#version 450
// SSD backward in its recurrent form, dB and dC: per (batch, position, group, n), the heads of the group summed in
// order, dC = sum_h V and dB = sum_h dt_h U (ssd_recurrent_bwd_state.comp wrote V and U per head).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "ssd_common.glsl"

layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer Vb { float V[]; };   // (b, L, h, n)
layout(std430, binding = 1) readonly buffer Ub { float U[]; };
layout(std430, binding = 2) readonly buffer DtOut { float dt_out[]; };
layout(std430, binding = 3) writeonly buffer Db { float dB[]; };   // (b, L, g, n)
layout(std430, binding = 4) writeonly buffer Dc { float dC[]; };

layout(push_constant) uniform Push {
    uint batch, seqlen, nheads, ngroups, dstate, chunk, nchunks;
    uint flags;   // SsdFlags (ssd_flags.glsl)
} p;

void main() {
    const uint hpg = p.nheads / p.ngroups;
    GRID_STRIDE_LOOP(e, p.batch * p.seqlen * p.ngroups * p.dstate) {
        const uint n = e % p.dstate;
        const uint rest = e / p.dstate;
        const uint grp = rest % p.ngroups;
        const uint tok = rest / p.ngroups;
        const uint pos = tok % p.seqlen;
        const uint b = tok / p.seqlen;
        // The walk's (chunk, index) of this position: dt_out is kept in walk order.
        const uint oc = pos / p.chunk;
        const uint start = oc * p.chunk;
        const uint len = min(p.chunk, p.seqlen - start);
        const bool mirror = SSD_HAS(p.flags, SSD_MIRRORED);
        const uint c = mirror ? p.nchunks - 1u - oc : oc;
        const uint k = mirror ? start + len - 1u - pos : pos - start;
        float db = 0.0;
        float dc = 0.0;
        for (uint i = 0; i < hpg; ++i) {
            const uint head = grp * hpg + i;
            const uint vo = (tok * p.nheads + head) * p.dstate + n;
            dc += V[vo];
            db = fma(dt_out[((b * p.nheads + head) * p.nchunks + c) * p.chunk + k], U[vo], db);
        }
        dB[e] = db;
        dC[e] = dc;
    }
}
