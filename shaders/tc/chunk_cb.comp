#version 450
// The SSD's C.B^T on tensor cores, once per (batch, chunk, group): cb[b, c, g, t, s] = C[t] . B[s] over d_state,
// for t, s in the chunk (Q x Q, fp32). tc/chunk_scan reads it for every head of the group (h / g of them), where
// the fp32 chunk_scan recomputes it per block of heads. Causal: tiles wholly above the diagonal (every s > t) are
// neither computed nor written, and no reader touches them; SSD_WHOLE_CB computes every tile (the bidirectional
// sum form reads both triangles). One workgroup per BM x BN tile of (t, s).
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"
#include "ssd_common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint BM = 64;   // positions t per tile
layout(constant_id = 2) const uint BN = 64;   // positions s per tile
layout(constant_id = 3) const uint BK = 32;   // d_state per slice
layout(constant_id = 4) const uint WM = 32;
layout(constant_id = 5) const uint WN = 32;
layout(constant_id = 6) const uint TM = 16;
layout(constant_id = 7) const uint TN = 16;
layout(constant_id = 8) const uint TK = 16;

#include "tensor_elems.glsl"
layout(std430, binding = 0) readonly buffer Cm { TENSOR_ELEM C[]; };
layout(std430, binding = 1) readonly buffer Bm { TENSOR_ELEM B[]; };
layout(std430, binding = 0) readonly buffer Cm4 { TENSOR_WORD4 C4[]; };
layout(std430, binding = 1) readonly buffer Bm4 { TENSOR_WORD4 B4[]; };
layout(std430, binding = 2) writeonly buffer Cb { float cb[]; };

layout(push_constant) uniform Push {
    uint batch, seqlen, nheads, ngroups, headdim, dstate, chunk, nchunks;
    uint flags;   // SsdFlags (ssd_flags.glsl)
} p;

#include "tc_product.glsl"

ChunkSpan span;
uint b, grp, t0, s0, n0, base;
bool wholeN;   // rows of B and C start on 16-byte boundaries
bool fastA, fastB;   // this slice's rows of C, of B, wholly inside (span_rows4): TC_WORD4 at atA, atB
int atA, stepA, atB, stepB;

vec4 word_a(uint r, uint c) {   // C[t, n], row-major (t, n)
    if (fastA) {
        return TC_TWORD4(C4, atA, stepA, r, c);
    }
    return t0 + r < span.len
        ? TC_TLOAD4(C, C4, ((b * p.seqlen + span_pos(span, t0 + r)) * p.ngroups + grp) * p.dstate + n0 + c, n0 + c, p.dstate, wholeN) : vec4(0.0);
}

vec4 word_b(uint r, uint c) {   // B[s, n] as the (n, s) operand: stored column-major, a row per s
    if (fastB) {
        return TC_TWORD4(B4, atB, stepB, r, c);
    }
    return s0 + r < span.len
        ? TC_TLOAD4(B, B4, ((b * p.seqlen + span_pos(span, s0 + r)) * p.ngroups + grp) * p.dstate + n0 + c, n0 + c, p.dstate, wholeN) : vec4(0.0);
}

void tc_element(uint i, uint j, float v) {
    if (t0 + i < span.len && s0 + j < span.len) {
        cb[base + (t0 + i) * p.chunk + s0 + j] = v;
    }
}

void main() {
    const uint tilesT = (p.chunk + BM - 1) / BM;
    const uint tilesS = (p.chunk + BN - 1) / BN;
    const uint items = tilesT * tilesS * p.nchunks * p.batch * p.ngroups;
    for (uint w = gl_WorkGroupID.x; w < items; w += gl_NumWorkGroups.x) {
        uint r = w;
        const uint ts = r % tilesS; r /= tilesS;
        const uint tt = r % tilesT; r /= tilesT;
        const uint c = r % p.nchunks; r /= p.nchunks;
        grp = r % p.ngroups;
        b = r / p.ngroups;
        wholeN = p.dstate % 4 == 0;
        span = chunk_span(c, p.chunk, p.nchunks, p.seqlen, SSD_HAS(p.flags, SSD_MIRRORED));
        t0 = tt * BM;
        s0 = ts * BN;
        if (t0 >= span.len || s0 >= span.len || s0 > t0 + BM - 1 && !SSD_HAS(p.flags, SSD_WHOLE_CB)) {
            continue;   // uniform: past the sequence end, or wholly above the diagonal where only those are read
        }

        TC_ACC acc[TC_FRAGS];
        tc_zero(acc);
        for (n0 = 0; n0 < p.dstate; n0 += BK) {
            fastA = span_rows4(span, t0, BM, 0, b, p.seqlen, p.ngroups, grp, p.dstate, n0, BK, atA, stepA);
            fastB = span_rows4(span, s0, BN, 0, b, p.seqlen, p.ngroups, grp, p.dstate, n0, BK, atB, stepB);
            tc_product(acc, false, true);
        }
        base = ((b * p.nchunks + c) * p.ngroups + grp) * p.chunk * p.chunk;
        if (t0 + BM <= span.len && s0 + BN <= span.len) {
            TC_STORE_DIRECT(acc, cb, base + t0 * p.chunk + s0, p.chunk);
        } else {
            tc_epilogue(acc);
        }
    }
}
