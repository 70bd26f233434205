#version 450
// The backward's dC (REVERSE = 0) and dB (REVERSE = 1) on tensor cores, per (batch, chunk, group) and BM x BN tile
// of (positions, d_state), from dcb (tc/chunk_scan_bwd_dcb, the heads' weighted g . x^T summed per group):
//   dC[t] = sum_heads (exp(dA_cs[t]) g[t]) S_in                        + sum_{s <= t} dcb[t, s] B[s]
//   dB[s] = sum_heads (dt_out[s] exp(dA_cs[last] - dA_cs[s]) x[s]) dS_next + sum_{t >= s} dcb[t, s] C[t]
// (S_in the state entering the chunk, dS_next the gradient of the state leaving it; both per head). The state
// terms are one product per head over the head dimension, each also giving that head's row dots for the dA_cs
// gradient, W[i] . term[i] with W = C (dC) or B (dB), partial over this d_state tile (as ssd/chunk_scan_bwd_dbc.comp:
// gys and ts, which chunk_cumsum_bwd sums); the intra-chunk term is one product for the whole group.
// Generically, rows i of the tile, sources j on the other side:
//   out[i] = sum_heads (e(i) U[i]) Sm + sum_j dcb(i, j) R[j]     dC: U = g, Sm = S_in, R = B, W = C;  dB: U = x, Sm = dS_next, R = C, W = B
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"
#include "ssd_common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint BM = 64;   // positions per tile (dC: t, dB: s)
layout(constant_id = 2) const uint BN = 64;   // d_state per tile
layout(constant_id = 3) const uint BK = 32;   // head dimension, then positions of the other side, per slice
layout(constant_id = 4) const uint WM = 32;
layout(constant_id = 5) const uint WN = 32;
layout(constant_id = 6) const uint TM = 16;
layout(constant_id = 7) const uint TN = 16;
layout(constant_id = 8) const uint TK = 16;
layout(constant_id = 9) const uint REVERSE = 0;   // 1: dB
layout(constant_id = 10) const uint G_SHIFT = 0;  // dC: g read one step away (g_at); dB reads no g

#include "tensor_elems.glsl"   // u, R, W and the output
layout(std430, binding = 0) readonly buffer U { TENSOR_ELEM u[]; };        // (b, L, h, p): g (dC) or x (dB)
layout(std430, binding = 1) readonly buffer Sm { float sm[]; };      // (b, nc, h, p, n): S_in (dC) or dS_next (dB)
layout(std430, binding = 2) readonly buffer Dcb { float dcb[]; };    // (b, nc, g, Q, Q)
layout(std430, binding = 3) readonly buffer R { TENSOR_ELEM rr[]; };       // (b, L, g, n): B (dC) or C (dB)
layout(std430, binding = 4) readonly buffer W { TENSOR_ELEM wv[]; };       // (b, L, g, n): C (dC) or B (dB)
layout(std430, binding = 5) readonly buffer DtOut { float dt_out[]; };
layout(std430, binding = 6) readonly buffer DaCs { float dA_cs[]; };
layout(std430, binding = 7) readonly buffer DaCsLo { float dA_cs_lo[]; };
layout(std430, binding = 8) buffer Out { TENSOR_ELEM outp[]; };            // (b, L, g, n); SSD_ACCUMULATE adds to it
layout(std430, binding = 9) writeonly buffer RowDot { float rowdot[]; };   // (b, h, nc, Q, tilesN)
layout(std430, binding = 0) readonly buffer U4 { TENSOR_WORD4 u4[]; };
layout(std430, binding = 1) readonly buffer Sm4 { vec4 sm4[]; };
layout(std430, binding = 2) readonly buffer Dcb4 { vec4 dcb4[]; };
layout(std430, binding = 3) readonly buffer R4 { TENSOR_WORD4 rr4[]; };

layout(push_constant) uniform Push {
    uint batch, seqlen, nheads, ngroups, headdim, dstate, chunk, nchunks;
    uint flags;   // SsdFlags (ssd_flags.glsl)
} p;

#define TC_ROW_DOTS (!intra)   // a head's state term: W[i] . term[i] per row (tc_row_partner, below)
bool intra;   // which slices: a head's state term (k0 over the head dimension) or the intra-chunk term (k0 over positions)
#include "tc_product.glsl"

// Per item, loaded once for every head: each head's state term otherwise waits on global loads three times beyond
// its operand slices (its factors, and the row dots' W twice), and a workgroup walks the group's heads in sequence.
const uint E_HEADS = 16;
shared float e_rows[E_HEADS * BM];   // e(i) at the tile's rows for a batch of E_HEADS heads

ChunkSpan span;
uint b, head, grp, t0, n0, k0, cbase, sbase, cs, tileN, tilesN, eh;
bool wholeP, wholeN, wholeQ;   // rows of u, of B, C and the states, of dcb start on 16-byte boundaries

uint gn_at(uint pos) {   // a row of (b, L, g, n) at the sequence position of chunk position pos
    return ((b * p.seqlen + span_pos(span, pos)) * p.ngroups + grp) * p.dstate;
}

vec4 word_a(uint r, uint c) {
    if (!intra) {   // e(i) U[i, k], row-major
        uint pos;
        if (t0 + r < span.len && g_at(span_pos(span, t0 + r), REVERSE == 0 ? G_SHIFT : 0, p.seqlen, pos)) {
            return TC_TLOAD4(u, u4, ((b * p.seqlen + pos) * p.nheads + head) * p.headdim + k0 + c, k0 + c, p.headdim, wholeP) * e_rows[eh * BM + r];
        }
        return vec4(0.0);
    }
    if (REVERSE == 0) {   // dcb[t, s] for s <= t, row-major (t, s)
        const uint t = t0 + r;
        const uint s = k0 + c;
        return t < span.len ? TC_LOAD4(dcb, dcb4, cbase + t * p.chunk + s, s, t + 1, wholeQ) : vec4(0.0);
    }
    // dcb[t, s] for t >= s as the (s, t) operand: stored column-major, a row of dcb per t
    const uint t = k0 + r;
    const uint s = t0 + c;
    return t < span.len ? TC_LOAD4(dcb, dcb4, cbase + t * p.chunk + s, s, t + 1, wholeQ) : vec4(0.0);
}

vec4 word_b(uint r, uint c) {
    if (!intra) {   // Sm[k, n], row-major (p, n)
        return k0 + r < p.headdim ? TC_LOAD4(sm, sm4, (sbase + k0 + r) * p.dstate + n0 + c, n0 + c, p.dstate, wholeN) : vec4(0.0);
    }
    return k0 + r < span.len ? TC_TLOAD4(rr, rr4, gn_at(k0 + r) + n0 + c, n0 + c, p.dstate, wholeN) : vec4(0.0);   // R[j, n]
}

void tc_element(uint i, uint j, float v) {
    if (!intra || t0 + i >= span.len || n0 + j >= p.dstate) {
        return;   // a head's state term: only its row dots (tc_row_partner)
    }
    const uint o = gn_at(t0 + i) + n0 + j;
    TENSOR_STORE(outp, o, SSD_HAS(p.flags, SSD_ACCUMULATE) ? TENSOR_LOAD(outp, o) + v : v);
}

// A head's row dots W[i] . term[i] over this d_state tile (tc_product.glsl's row dots), W read from memory (a W
// tile in shared memory cost workgroups an SM more than it saved: docs/PERF.md).
bool tc_row_partner(uint i, out uint base) {
    const bool inside = t0 + i < span.len;
    base = inside ? gn_at(t0 + i) + n0 : 0;
    return inside;
}

bool tc_partner(uint base, uint j, out float v) {
    const bool inside = n0 + j < p.dstate;
    v = 0.0;
    if (inside) {
        v = TENSOR_LOAD(wv, base + j);
    }
    return inside;
}

void tc_row_dot(uint i, float dot) {
    rowdot[(cs + t0 + i) * tilesN + tileN] = dot;
}

void main() {
    const uint tid = gl_LocalInvocationID.x;
    const uint tilesT = (p.chunk + BM - 1) / BM;
    tilesN = (p.dstate + BN - 1) / BN;
    const uint items = tilesT * tilesN * p.nchunks * p.batch * p.ngroups;
    const uint hpg = p.nheads / p.ngroups;

    for (uint w = gl_WorkGroupID.x; w < items; w += gl_NumWorkGroups.x) {
        uint r = w;
        tileN = r % tilesN; r /= tilesN;
        const uint tt = r % tilesT; r /= tilesT;
        const uint c = r % p.nchunks; r /= p.nchunks;
        grp = r % p.ngroups;
        b = r / p.ngroups;
        wholeP = p.headdim % 4 == 0;
        wholeN = p.dstate % 4 == 0;
        wholeQ = p.chunk % 4 == 0;
        span = chunk_span(c, p.chunk, p.nchunks, p.seqlen, SSD_HAS(p.flags, SSD_MIRRORED));
        t0 = tt * BM;
        n0 = tileN * BN;
        if (t0 >= span.len) {
            continue;   // uniform: a tile wholly past the sequence end
        }
        cbase = ((b * p.nchunks + c) * p.ngroups + grp) * p.chunk * p.chunk;

        TC_ACC acc[TC_FRAGS];
        tc_zero(acc);
        intra = false;
        const uint last = span.len - 1;
        for (uint hh = 0; hh < hpg; ++hh) {
            eh = hh % E_HEADS;
            if (eh == 0) {   // the next batch of heads' factors; the previous batch's readers passed tc_row_dots_done
                for (uint e = tid; e < E_HEADS * BM; e += TC_THREADS) {
                    const uint hk = hh + e / BM;
                    const uint t = t0 + e % BM;
                    float f = 0.0;
                    if (hk < hpg && t < span.len) {
                        const uint csk = ((b * p.nheads + grp * hpg + hk) * p.nchunks + c) * p.chunk;
                        f = REVERSE == 0 ? exp(min(dA_cs[csk + t], 0.0))
                                         : dt_out[csk + t] * exp(min(cs_diff(dA_cs[csk + last], dA_cs_lo[csk + last], dA_cs[csk + t], dA_cs_lo[csk + t]), 0.0));
                    }
                    e_rows[e] = f;
                }
                barrier();   // word_a reads e_rows
            }
            head = grp * hpg + hh;
            cs = ((b * p.nheads + head) * p.nchunks + c) * p.chunk;
            sbase = ((b * p.nchunks + c) * p.nheads + head) * p.headdim;
            TC_ACC term[TC_FRAGS];
            tc_zero(term);
            for (k0 = 0; k0 < p.headdim; k0 += BK) {
                tc_product(term, false, false);
            }
            tc_epilogue(term);   // the row dots only
            tc_row_dots_done();   // also: e_rows is read before the next batch writes it
            [[unroll]] for (uint f = 0; f < TC_FRAGS; ++f) {
                acc[f] = acc[f] + term[f];
            }
        }

        intra = true;
        // The other side's positions: dC s <= t < min(t0 + BM, len); dB t >= s, from the slice holding t0 up to len.
        const uint kBegin = REVERSE == 0 ? 0 : t0 / BK * BK;
        const uint kEnd = REVERSE == 0 ? min(t0 + BM, span.len) : span.len;
        for (k0 = kBegin; k0 < kEnd; k0 += BK) {
            tc_product(acc, REVERSE != 0, false);
        }
        tc_epilogue(acc);
    }
}
