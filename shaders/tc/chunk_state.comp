#version 450
// chunk_state on tensor cores (the math of ssd/chunk_state.comp): per (batch, chunk, head) the (p x Q)(Q x n)
// product states[b, c, h, p, n] = sum_s w[s] x[s, p] B[s, n], with w[s] = exp(dA_cs[last] - dA_cs[s]) dt_out[s]
// (GRAD = 1: the backward's dstates = sum_t exp(dA_cs[t]) g[t, p] C[t, n], x <- g, B <- C). The weights are
// computed once per chunk in fp32 and folded into x as it is staged. One workgroup per BM x BN tile of (p, n).
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"
#include "ssd_common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint BM = 64;   // headdim tile
layout(constant_id = 2) const uint BN = 64;   // d_state tile
layout(constant_id = 3) const uint BK = 32;   // positions per slice
layout(constant_id = 4) const uint WM = 32;
layout(constant_id = 5) const uint WN = 32;
layout(constant_id = 6) const uint TM = 16;
layout(constant_id = 7) const uint TN = 16;
layout(constant_id = 8) const uint TK = 16;
layout(constant_id = 9) const uint GRAD = 0;      // 1: the backward's weights (above)
layout(constant_id = 10) const uint G_SHIFT = 0;  // GRAD: g read one step away (g_at)

#include "tensor_elems.glsl"
layout(std430, binding = 0) readonly buffer X { TENSOR_ELEM x[]; };
layout(std430, binding = 1) readonly buffer Bm { TENSOR_ELEM B[]; };
layout(std430, binding = 2) readonly buffer DtOut { float dt_out[]; };
layout(std430, binding = 3) readonly buffer DaCs { float dA_cs[]; };
layout(std430, binding = 4) writeonly buffer States { float states[]; };
layout(std430, binding = 5) readonly buffer DaCsLo { float dA_cs_lo[]; };
layout(std430, binding = 0) readonly buffer X4 { TENSOR_WORD4 x4[]; };
layout(std430, binding = 1) readonly buffer Bm4 { TENSOR_WORD4 B4[]; };

layout(push_constant) uniform Push {
    uint batch, seqlen, nheads, ngroups, headdim, dstate, chunk, nchunks;
    uint flags;   // SsdFlags (ssd_flags.glsl)
} p;

#include "tc_product.glsl"

const uint MAX_CHUNK = 256;
shared float weight[MAX_CHUNK];

ChunkSpan span;
uint b, head, grp, p0, n0, s0, base;
bool wholeP, wholeN;   // rows of x and of B start on 16-byte boundaries
bool fastA, fastB;   // this slice's rows of x, of B, wholly inside (span_rows4): TC_WORD4 at atA, atB
int atA, stepA, atB, stepB;

vec4 word_a(uint r, uint c) {   // x[s, p] w[s] as the (p, s) operand: stored column-major, a row per s
    if (fastA) {
        return TC_TWORD4(x4, atA, stepA, r, c) * weight[s0 + r];
    }
    uint pos;
    if (s0 + r < span.len && g_at(span_pos(span, s0 + r), GRAD == 0 ? 0 : G_SHIFT, p.seqlen, pos)) {
        return TC_TLOAD4(x, x4, ((b * p.seqlen + pos) * p.nheads + head) * p.headdim + p0 + c, p0 + c, p.headdim, wholeP) * weight[s0 + r];
    }
    return vec4(0.0);
}

vec4 word_b(uint r, uint c) {   // B[s, n], row-major
    if (fastB) {
        return TC_TWORD4(B4, atB, stepB, r, c);
    }
    return s0 + r < span.len
        ? TC_TLOAD4(B, B4, ((b * p.seqlen + span_pos(span, s0 + r)) * p.ngroups + grp) * p.dstate + n0 + c, n0 + c, p.dstate, wholeN) : vec4(0.0);
}

void tc_element(uint i, uint j, float v) {
    if (p0 + i < p.headdim && n0 + j < p.dstate) {
        states[(base + p0 + i) * p.dstate + n0 + j] = v;
    }
}

void main() {
    const uint tid = gl_LocalInvocationID.x;
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
        head = r % p.nheads;
        b = r / p.nheads;
        grp = head / hpg;
        p0 = tp * BM;
        n0 = tn * BN;
        wholeP = p.headdim % 4 == 0;
        wholeN = p.dstate % 4 == 0;
        span = chunk_span(c, p.chunk, p.nchunks, p.seqlen, SSD_HAS(p.flags, SSD_MIRRORED));
        const uint cs = ((b * p.nheads + head) * p.nchunks + c) * p.chunk;
        const float last = dA_cs[cs + span.len - 1];
        const float last_lo = dA_cs_lo[cs + span.len - 1];

        barrier();   // the previous item's slices have read the weights
        for (uint s = tid; s < span.len; s += TC_THREADS) {
            weight[s] = GRAD == 0 ? exp(min(cs_diff(last, last_lo, dA_cs[cs + s], dA_cs_lo[cs + s]), 0.0)) * dt_out[cs + s]
                                  : exp(min(dA_cs[cs + s], 0.0));
        }
        barrier();

        TC_ACC acc[TC_FRAGS];
        tc_zero(acc);
        for (s0 = 0; s0 < span.len; s0 += BK) {
            fastA = span_rows4(span, s0, BK, GRAD == 0 ? 0 : G_SHIFT, b, p.seqlen, p.nheads, head, p.headdim, p0, BM, atA, stepA);
            fastB = span_rows4(span, s0, BK, 0, b, p.seqlen, p.ngroups, grp, p.dstate, n0, BN, atB, stepB);
            tc_product(acc, true, false);
        }
        base = ((b * p.nchunks + c) * p.nheads + head) * p.headdim;
        if (p0 + BM <= p.headdim && n0 + BN <= p.dstate) {
            TC_STORE_DIRECT(acc, states, (base + p0) * p.dstate + n0, p.dstate);
        } else {
            tc_epilogue(acc);
        }
    }
}
