#version 450
// The backward's gradient of C.B^T on tensor cores (mamba_ssm's _chunk_scan_bwd_dcb), once per (batch, chunk, group):
//   dcb[t, s] = sum_{heads of the group} (g[t] . x[s]) exp(dA_cs[t] - dA_cs[s]) dt_out[s]     for s <= t, else 0
// with g the gated output gradient. tc/chunk_scan_bwd_dbc then forms dC = dcb B and dB = dcb^T C for the whole
// group at once, where the fp32 kernel (ssd/chunk_scan_bwd_dbc.comp) multiplies per head. Each head's g . x^T is a
// tensor-core product over the head dimension; its decay weight is applied per element in fp32 after the product
// (it is not separable into row and column factors that f16 could hold), and the heads' sum stays in registers:
// SPLITS workgroups share a tile, each summing every SPLITS-th head into a partial dcb of its own, which one pass
// then adds (more workgroups than tiles fill the GPU's last wave).
//
// It also writes, per head, the intra-chunk part of the dA_cs gradient. With X[t, s] = M[t, s] (C[t] . B[s]) and
// M the weighted product of one head, the pairs s < k <= t that span step k sum to
//   straddle[k] = sum_{m < k} (below[m] - left[m]),  below[m] = sum_{t > m} X[t, m],  left[m] = sum_{s < m} X[m, s],
// and each X[t, s] enters below[s] and left[t] as the same fp32 value, so the pairs inside [0, k) cancel exactly
// (their rounding included). This workgroup's shares: below over its rows, left over its columns, into
// parts (b, h, nc, Q, tilesT + tilesS): entries [0, tilesT) are below's per row tile, [tilesT, +tilesS) left's per
// column tile. chunk_cumsum_bwd (TELESCOPED) sums them in a fixed order.
// One workgroup per BM x BN tile of (t, s) on or below the diagonal.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"
#include "ssd_common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint BM = 64;   // positions t per tile
layout(constant_id = 2) const uint BN = 64;   // positions s per tile
layout(constant_id = 3) const uint BK = 32;   // head dimension per slice
layout(constant_id = 4) const uint WM = 32;
layout(constant_id = 5) const uint WN = 32;
layout(constant_id = 6) const uint TM = 16;
layout(constant_id = 7) const uint TN = 16;
layout(constant_id = 8) const uint TK = 16;
layout(constant_id = 9) const uint G_SHIFT = 0;   // g read one step away (g_at)
layout(constant_id = 10) const uint SPLITS = 1;   // workgroups per tile, each over every SPLITS-th head of the group

#include "tensor_elems.glsl"   // g and x
layout(std430, binding = 0) readonly buffer G { TENSOR_ELEM g[]; };        // (b, L, h, p)
layout(std430, binding = 1) readonly buffer X { TENSOR_ELEM x[]; };        // (b, L, h, p)
layout(std430, binding = 2) readonly buffer Cb { float cb[]; };      // (b, nc, g, Q, Q): C.B^T from tc/chunk_cb
layout(std430, binding = 3) readonly buffer DtOut { float dt_out[]; };
layout(std430, binding = 4) readonly buffer DaCs { float dA_cs[]; };
layout(std430, binding = 5) readonly buffer DaCsLo { float dA_cs_lo[]; };
layout(std430, binding = 6) writeonly buffer Dcb { float dcb[]; };   // (SPLITS, b, nc, g, Q, Q): partial sums, tiles on or below the diagonal
layout(std430, binding = 7) writeonly buffer Parts { float parts[]; };   // (b, h, nc, Q, tilesT + tilesS)
layout(std430, binding = 0) readonly buffer G4 { TENSOR_WORD4 g4[]; };
layout(std430, binding = 1) readonly buffer X4 { TENSOR_WORD4 x4[]; };

layout(push_constant) uniform Push {
    uint batch, seqlen, nheads, ngroups, headdim, dstate, chunk, nchunks;
    uint flags;   // SsdFlags (ssd_flags.glsl)
} p;

void store_head_arrays();
#define TC_STAGED store_head_arrays   // a head's first slice publishes its decay arrays (main)
#include "tc_product.glsl"

// The epilogue's element ownership: lane e of a subgroup holds elements e, e + SG, ... of each staged fragment
// (the subgroup size is the one the host sized the workgroup with).
const uint SG = TC_THREADS / TC_SUBGROUPS;
const uint PER = TM * TN / SG;

// This head's dA_cs at the tile's rows t and columns s, its two parts summed into one fp32 value (plain fp32
// differences per element, as tc/chunk_scan's), with dt_out[s].
shared float dAt[BM];
shared float dAs[BN];
shared float dts[BN];
shared float leftPart[BM * (BN / TN)];    // per row and fragment column: sum of X over the fragment's columns
shared float belowPart[BN * (BM / TM)];   // per column and fragment row: sum of X over the fragment's rows

ChunkSpan span;
uint b, head, grp, t0, s0, k0;
bool wholeP;   // rows of g and x start on 16-byte boundaries
bool fastA, fastB;   // this slice's rows of g, of x, wholly inside (span_rows4): TC_WORD4 at atA, atB
int atA, stepA, atB, stepB;

// A head's dA_cs (both parts) at the tile's rows and columns and dt_out at its columns, read raw into registers
// before its first slice and stored by that slice (store_head_arrays, before its barrier): the head waits on
// memory once for them and its first operands, not twice.
const uint PRO = (BM + BN + TC_THREADS - 1) / TC_THREADS;
float proA[PRO], proLo[PRO], proDt[PRO];
bool proPending;   // read, not yet stored

void load_head_arrays(uint cs) {
    [[unroll]] for (uint q = 0; q < PRO; ++q) {
        const uint e = gl_LocalInvocationID.x + q * TC_THREADS;
        const uint pos = e < BM ? t0 + e : s0 + e - BM;
        const bool ok = e < BM + BN && pos < span.len;
        proA[q] = ok ? dA_cs[cs + pos] : 0.0;
        proLo[q] = ok ? dA_cs_lo[cs + pos] : 0.0;
        proDt[q] = ok && e >= BM ? dt_out[cs + pos] : 0.0;
    }
    proPending = true;
}

// Safe without a barrier before it: the previous head's readers (its epilogue) passed the barrier before its sums.
void store_head_arrays() {
    if (!proPending) {
        return;
    }
    [[unroll]] for (uint q = 0; q < PRO; ++q) {
        const uint e = gl_LocalInvocationID.x + q * TC_THREADS;
        if (e < BM) {
            dAt[e] = proA[q] + proLo[q];
        } else if (e < BM + BN) {
            dAs[e - BM] = proA[q] + proLo[q];
            dts[e - BM] = proDt[q];
        }
    }
    proPending = false;
}

vec4 word_a(uint r, uint c) {   // g[t, p], row-major
    if (fastA) {
        return TC_TWORD4(g4, atA, stepA, r, c);
    }
    uint pos;
    if (t0 + r < span.len && g_at(span_pos(span, t0 + r), G_SHIFT, p.seqlen, pos)) {
        return TC_TLOAD4(g, g4, ((b * p.seqlen + pos) * p.nheads + head) * p.headdim + k0 + c, k0 + c, p.headdim, wholeP);
    }
    return vec4(0.0);
}

vec4 word_b(uint r, uint c) {   // x[s, p] as the (p, s) operand: stored column-major, a row per s
    if (fastB) {
        return TC_TWORD4(x4, atB, stepB, r, c);
    }
    return s0 + r < span.len
        ? TC_TLOAD4(x, x4, ((b * p.seqlen + span_pos(span, s0 + r)) * p.nheads + head) * p.headdim + k0 + c, k0 + c, p.headdim, wholeP)
        : vec4(0.0);
}

void tc_element(uint i, uint j, float v) {}   // unused: this kernel walks its staged fragments itself

void main() {
    const uint tid = gl_LocalInvocationID.x;
    const uint lane = gl_SubgroupInvocationID;
    const uint tilesT = (p.chunk + BM - 1) / BM;
    const uint tilesS = (p.chunk + BN - 1) / BN;
    const uint nparts = tilesT + tilesS;
    const uint items = tilesT * tilesS * p.nchunks * p.batch * p.ngroups * SPLITS;
    const uint plane = p.batch * p.nchunks * p.ngroups * p.chunk * p.chunk;   // one split's partial dcb
    const uint hpg = p.nheads / p.ngroups;
    const uint wm0 = (gl_SubgroupID / TC_WARPS_N) * WM;
    const uint wn0 = (gl_SubgroupID % TC_WARPS_N) * WN;
    const uint at = gl_SubgroupID * TM * TN;

    for (uint w = gl_WorkGroupID.x; w < items; w += gl_NumWorkGroups.x) {
        uint r = w;
        const uint split = r % SPLITS; r /= SPLITS;
        const uint ts = r % tilesS; r /= tilesS;
        const uint tt = r % tilesT; r /= tilesT;
        const uint c = r % p.nchunks; r /= p.nchunks;
        grp = r % p.ngroups;
        b = r / p.ngroups;
        wholeP = p.headdim % 4 == 0;
        span = chunk_span(c, p.chunk, p.nchunks, p.seqlen, SSD_HAS(p.flags, SSD_MIRRORED));
        t0 = tt * BM;
        s0 = ts * BN;
        if (t0 >= span.len || s0 >= span.len || s0 > t0 + BM - 1) {
            continue;   // uniform: past the sequence end, or wholly above the diagonal
        }
        const uint cbase = ((b * p.nchunks + c) * p.ngroups + grp) * p.chunk * p.chunk;

        // C.B^T at this invocation's elements, where X needs it (s < t).
        float cbr[TC_FRAGS * PER];
        float sum[TC_FRAGS * PER];
        [[unroll]] for (uint f = 0; f < TC_FRAGS; ++f) {
            [[unroll]] for (uint q = 0; q < PER; ++q) {
                const uint e = lane + q * SG;
                const uint t = t0 + wm0 + (f / TC_FRAGS_N) * TM + e / TN;
                const uint s = s0 + wn0 + (f % TC_FRAGS_N) * TN + e % TN;
                cbr[f * PER + q] = s < t && t < span.len ? cb[cbase + t * p.chunk + s] : 0.0;
                sum[f * PER + q] = 0.0;
            }
        }

        for (uint hh = split; hh < hpg; hh += SPLITS) {
            head = grp * hpg + hh;
            const uint cs = ((b * p.nheads + head) * p.nchunks + c) * p.chunk;
            load_head_arrays(cs);

            TC_ACC acc[TC_FRAGS];
            tc_zero(acc);
            for (k0 = 0; k0 < p.headdim; k0 += BK) {
                fastA = span_rows4(span, t0, BM, G_SHIFT, b, p.seqlen, p.nheads, head, p.headdim, k0, BK, atA, stepA);
                fastB = span_rows4(span, s0, BN, 0, b, p.seqlen, p.nheads, head, p.headdim, k0, BK, atB, stepB);
                tc_product(acc, false, true);   // the first publishes the decay arrays (store_head_arrays)
            }

            // Per fragment: weight, add to the heads' sum, X into the staging area, then its row and column sums.
            tc_frags_begin();
            [[unroll]] for (uint f = 0; f < TC_FRAGS; ++f) {
                const uint row0 = wm0 + (f / TC_FRAGS_N) * TM;
                const uint col0 = wn0 + (f % TC_FRAGS_N) * TN;
                tc_frag_store(acc[f], at);
                subgroupMemoryBarrierShared();
                subgroupBarrier();
                [[unroll]] for (uint q = 0; q < PER; ++q) {
                    const uint e = lane + q * SG;
                    const uint i = row0 + e / TN;
                    const uint j = col0 + e % TN;
                    float m = 0.0;
                    if (s0 + j <= t0 + i && t0 + i < span.len) {
                        m = tc_frag_get(at + e) * exp(min(dAt[i] - dAs[j], 0.0)) * dts[j];
                    }
                    sum[f * PER + q] += m;
                    tc_frag_set(at + e, m * cbr[f * PER + q]);   // zero unless s < t
                }
                subgroupMemoryBarrierShared();
                subgroupBarrier();
                for (uint u = lane; u < TM + TN; u += SG) {
                    float v = 0.0;
                    if (u < TM) {
                        // Each lane from its own column: rows TN apart share a bank when read together.
                        [[unroll]] for (uint k = 0; k < TN; ++k) {
                            v += tc_frag_get(at + u * TN + (k + u) % TN);
                        }
                        leftPart[(row0 + u) * (BN / TN) + col0 / TN] = v;
                    } else {
                        [[unroll]] for (uint k = 0; k < TM; ++k) {
                            v += tc_frag_get(at + k * TN + u - TM);
                        }
                        belowPart[(col0 + u - TM) * (BM / TM) + row0 / TM] = v;
                    }
                }
                subgroupMemoryBarrierShared();
                subgroupBarrier();
            }
            barrier();
            for (uint e = tid; e < BM + BN; e += TC_THREADS) {
                float v = 0.0;
                if (e < BM) {
                    if (t0 + e < span.len) {
                        for (uint k = 0; k < BN / TN; ++k) {
                            v += leftPart[e * (BN / TN) + k];
                        }
                        parts[(cs + t0 + e) * nparts + tilesT + ts] = v;
                    }
                } else {
                    const uint j = e - BM;
                    if (s0 + j < span.len) {
                        for (uint k = 0; k < BM / TM; ++k) {
                            v += belowPart[j * (BM / TM) + k];
                        }
                        parts[(cs + s0 + j) * nparts + tt] = v;
                    }
                }
            }
            // No barrier here: the next head writes these sums in its epilogue, after its slices' barriers.
        }

        [[unroll]] for (uint f = 0; f < TC_FRAGS; ++f) {
            [[unroll]] for (uint q = 0; q < PER; ++q) {
                const uint e = lane + q * SG;
                const uint t = t0 + wm0 + (f / TC_FRAGS_N) * TM + e / TN;
                const uint s = s0 + wn0 + (f % TC_FRAGS_N) * TN + e % TN;
                if (t < span.len && s < span.len) {
                    dcb[split * plane + cbase + t * p.chunk + s] = sum[f * PER + q];
                }
            }
        }
    }
}
