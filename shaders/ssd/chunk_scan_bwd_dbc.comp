#version 450
// SSD backward, dC (REVERSE = 0) and dB (REVERSE = 1): one kernel, the two directions of the same product.
// With g = dy (gated), per head, inside a chunk, M[t, s] = (g[t] . x[s]) exp(dA_cs[t] - dA_cs[s]) dt[s] (s <= t):
//   dC[t] = sum_heads  exp(dA_cs[t]) g[t] S_in            + sum_{s <= t} M[t, s] B[s]
//   dB[s] = sum_heads  dt[s] exp(dA_cs[last] - dA_cs[s]) x[s] dS_next + sum_{t >= s} M[t, s] C[t]
// Generically, for output rows i and source rows j:
//   out[i] = sum_heads  e(i) U[i] Sm + sum_{j in mask(i)} (U[i] . V[j]) w(i, j) R[j]
//   dC: U = g, V = x, R = B, Sm = S_in (state entering the chunk),  e = exp(dA_i),               w = exp(dA_i - dA_j) dt_j, j <= i
//   dB: U = x, V = g, R = C, Sm = dS_next (gradient leaving it),    e = dt_i exp(dA_last - dA_i), w = exp(dA_j - dA_i) dt_i, j >= i
// (every exp argument <= 0). A workgroup owns a BM x BN tile of (positions, d_state) for HW heads of one group and
// writes their sum to its split's slice of out (b, splits, L, g, n); the host sums the splits in a fixed order.
//
// It also computes, per head, the pieces of the dA_cs gradient in a form free of cancellation (summing row sums
// minus column sums of M would cancel exactly at the chunk start and leave only rounding):
//   rowdot[i]   = W[i] . (e(i) U[i] Sm)  with W = C (dC) or B (dB): g[t] . y_state[t]  resp.  dt x[s] . (dS_next B[s]) e(..)
//   straddle[k] = sum_{j < k <= i} M[i, j] (C[i] . B[j])   (dC only: the intra-chunk pairs whose decay spans step k)
// both partial over this workgroup's d_state tile (and row tile for straddle); chunk_cumsum_bwd sums them.
// 256 invocations as 16 x 16, each a TM x TN block (rows ty*TM + i, columns tx + 16 j).
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"
#include "ssd_common.glsl"

layout(local_size_x = 256) in;
layout(constant_id = 0) const uint BM = 64;   // output positions per tile (multiple of 16)
layout(constant_id = 1) const uint BN = 64;   // d_state columns per tile (multiple of 16)
layout(constant_id = 2) const uint BK = 32;   // source positions per stage (multiple of 16)
layout(constant_id = 3) const uint PK = 32;   // headdim slice per stage (<= BK; divides BN: C . B walks BN in PK slices)
layout(constant_id = 4) const uint HW = 1;    // heads per workgroup (divides heads per group)
layout(constant_id = 5) const uint REVERSE = 0;
layout(constant_id = 6) const uint G_SHIFT = 0;   // g (U for dC, V for dB) read one step away (g_at)

layout(std430, binding = 0) readonly buffer U { float u[]; };       // (b, L, h, p)
layout(std430, binding = 1) readonly buffer V { float v[]; };       // (b, L, h, p)
layout(std430, binding = 2) readonly buffer R { float rr[]; };      // (b, L, g, n)
layout(std430, binding = 3) readonly buffer Sm { float sm[]; };     // (b, nchunks, h, p, n)
layout(std430, binding = 4) readonly buffer DtOut { float dt_out[]; };
layout(std430, binding = 5) readonly buffer DaCs { float dA_cs[]; };
layout(std430, binding = 6) buffer Out { float outp[]; };           // (b, splits, L, g, n)
layout(std430, binding = 7) readonly buffer W { float wv[]; };      // (b, L, g, n): C (dC) or B (dB)
layout(std430, binding = 8) writeonly buffer RowDot { float rowdot[]; };      // (b, h, nc, Q, tilesN)
layout(std430, binding = 9) writeonly buffer Straddle { float straddle[]; };  // (b, h, nc, Q, tilesT, tilesN), dC only
layout(std430, binding = 10) readonly buffer DaCsLo { float dA_cs_lo[]; };

layout(push_constant) uniform Push {
    uint batch, seqlen, nheads, ngroups, headdim, dstate, chunk, nchunks;
    uint flags;   // SsdFlags (ssd_flags.glsl)
} p;

const uint TM = BM / 16;
const uint TN = BN / 16;
const uint TK = BK / 16;

const uint PS = BK + 1;            // padded row strides: row-wise walks stay free of bank conflicts
// The straddle sums' thread layout (256 invocations): RSEG threads per row scan SL columns each; CSEG threads per
// column sum RL rows each. RSEG divides BK (16 or 32) and BM * RSEG <= 256; CSEG * BK = 256 <= the staging sizes.
const uint RSEG = BM <= 16 ? 16 : BM <= 32 ? 8 : 4;
const uint SL = BK / RSEG;
const uint CSEG = 256 / BK;
const uint RL = (BM + CSEG - 1) / CSEG;
const uint RS = BN + 1;

shared float Us[BM * PK];          // U[i][k] (scaled by e(i) in the state phase), or C[i] slices for C . B
shared float Vs[PK * (BK + 1)];    // V[j][k] stored as [k][j], padded
shared float Ps[BM * PS];          // weighted (U . V) tile [i][j]; then M for the straddle sums; row-dot partials
shared float Rs[BK * RS];          // R[j][n], or Sm[k][n] in the state phase (PK <= BK)
shared float carry[HW * BM];       // per head and row: sum of M over the source tiles already walked
shared float dAi[BM];               // dA_cs[i], or e(i) in the state phase
shared float dAiLo[BM];
shared float dti[BM];
shared float dAj[BK];
shared float dAjLo[BK];
shared float dtj[BK];

void main() {
    const uint tid = gl_LocalInvocationID.x;
    const uint tx = tid % 16;
    const uint ty = tid / 16;
    const uint hpg = p.nheads / p.ngroups;
    const uint splits = hpg / HW;
    const uint tilesT = (p.chunk + BM - 1) / BM;
    const uint tilesN = (p.dstate + BN - 1) / BN;
    const uint items = tilesN * tilesT * p.nchunks * splits * p.ngroups * p.batch;

    for (uint w = gl_WorkGroupID.x; w < items; w += gl_NumWorkGroups.x) {
        uint r = w;
        const uint tn = r % tilesN; r /= tilesN;
        const uint tt = r % tilesT; r /= tilesT;
        const uint c = r % p.nchunks; r /= p.nchunks;
        const uint sp = r % splits; r /= splits;
        const uint grp = r % p.ngroups;
        const uint b = r / p.ngroups;
        // g is U for dC and V for dB.
        const uint ushift = REVERSE == 0 ? G_SHIFT : 0u;
        const uint vshift = REVERSE == 0 ? 0u : G_SHIFT;
        const ChunkSpan span = chunk_span(c, p.chunk, p.nchunks, p.seqlen, SSD_HAS(p.flags, SSD_MIRRORED));
        const uint len = span.len;
        const uint t0 = tt * BM;
        if (t0 >= len) {
            continue;   // uniform: a tile wholly past the sequence end
        }
        const uint n0 = tn * BN;
        const uint headBase = grp * hpg + sp * HW;

        float acc[TM * TN];
        [[unroll]] for (uint i = 0; i < TM * TN; ++i) {
            acc[i] = 0.0;
        }

        // State term, head by head: (e(i) U[i]) . Sm[:, n] over the headdim in PK slices, then its row dot with W.
        for (uint hh = 0; hh < HW; ++hh) {
            const uint head = headBase + hh;
            const uint cs = ((b * p.nheads + head) * p.nchunks + c) * p.chunk;
            const float last = dA_cs[cs + len - 1];
            const float last_lo = dA_cs_lo[cs + len - 1];
            for (uint e = tid; e < BM; e += 256) {
                const bool ok = t0 + e < len;
                const float a = ok ? dA_cs[cs + t0 + e] : 0.0;
                const float a_lo = ok ? dA_cs_lo[cs + t0 + e] : 0.0;
                dAi[e] = REVERSE == 0 ? exp(min(a, 0.0))
                                      : (ok ? dt_out[cs + t0 + e] : 0.0) * exp(min(cs_diff(last, last_lo, a, a_lo), 0.0));
            }
            barrier();
            float tacc[TM * TN];
            [[unroll]] for (uint i = 0; i < TM * TN; ++i) {
                tacc[i] = 0.0;
            }
            const uint sbase = ((b * p.nchunks + c) * p.nheads + head) * p.headdim;
            for (uint k0 = 0; k0 < p.headdim; k0 += PK) {
                for (uint e = tid; e < BM * PK; e += 256) {
                    const uint i = e / PK;
                    const uint k = e % PK;
                    float val = 0.0;
                    uint pos;
                    if (t0 + i < len && k0 + k < p.headdim && g_at(span_pos(span, t0 + i), ushift, p.seqlen, pos)) {
                        val = u[((b * p.seqlen + pos) * p.nheads + head) * p.headdim + k0 + k] * dAi[i];
                    }
                    Us[e] = val;
                }
                for (uint e = tid; e < PK * BN; e += 256) {
                    const uint k = e / BN;
                    const uint j = e % BN;
                    float val = 0.0;
                    if (k0 + k < p.headdim && n0 + j < p.dstate) {
                        val = sm[(sbase + k0 + k) * p.dstate + n0 + j];
                    }
                    Rs[k * RS + j] = val;
                }
                barrier();
                [[unroll]] for (uint k = 0; k < PK; ++k) {
                    float a[TM];
                    float bb[TN];
                    [[unroll]] for (uint i = 0; i < TM; ++i) {
                        a[i] = Us[(ty * TM + i) * PK + k];
                    }
                    [[unroll]] for (uint j = 0; j < TN; ++j) {
                        bb[j] = Rs[k * RS + tx + 16 * j];
                    }
                    [[unroll]] for (uint i = 0; i < TM; ++i) {
                        [[unroll]] for (uint j = 0; j < TN; ++j) {
                            tacc[i * TN + j] = fma(a[i], bb[j], tacc[i * TN + j]);
                        }
                    }
                }
                barrier();
            }
            [[unroll]] for (uint i = 0; i < TM; ++i) {
                const uint t = t0 + ty * TM + i;
                float dot = 0.0;
                [[unroll]] for (uint j = 0; j < TN; ++j) {
                    const uint nj = n0 + tx + 16 * j;
                    if (t < len && nj < p.dstate) {
                        dot = fma(wv[((b * p.seqlen + span_pos(span, t)) * p.ngroups + grp) * p.dstate + nj], tacc[i * TN + j], dot);
                    }
                    acc[i * TN + j] += tacc[i * TN + j];
                }
                Ps[(ty * TM + i) * PS + tx] = dot;   // 16 partials per row (BK >= 16)
            }
            barrier();
            if (tid < BM && t0 + tid < len) {
                float sum = 0.0;
                [[unroll]] for (uint k = 0; k < 16; ++k) {
                    sum += Ps[tid * PS + k];
                }
                rowdot[(cs + t0 + tid) * tilesN + tn] = sum;
            }
            barrier();
        }

        // Intra-chunk term: source tiles on the causal side (REVERSE: the anti-causal side) of this tile.
        for (uint e = tid; e < HW * BM; e += 256) {
            carry[e] = 0.0;
        }
        const uint sbegin = REVERSE == 0 ? 0 : t0 / BK * BK;
        const uint send = REVERSE == 0 ? min(t0 + BM, len) : len;
        for (uint s0 = sbegin; s0 < send; s0 += BK) {
            // R rows of this source tile belong to the group: loaded once for all HW heads.
            for (uint e = tid; e < BK * BN; e += 256) {
                const uint j = e / BN;
                const uint k = e % BN;
                float val = 0.0;
                if (s0 + j < len && n0 + k < p.dstate) {
                    val = rr[((b * p.seqlen + span_pos(span, s0 + j)) * p.ngroups + grp) * p.dstate + n0 + k];
                }
                Rs[j * RS + k] = val;
            }
            // dC: C[i] . B[j] over this d_state tile (R = B here, W = C), shared by the heads, for the straddle sums.
            float cb[TM * TK];
            [[unroll]] for (uint i = 0; i < TM * TK; ++i) {
                cb[i] = 0.0;
            }
            if (REVERSE == 0) {
                for (uint k0 = 0; k0 < BN; k0 += PK) {
                    barrier();   // Us readers of the previous step are done
                    for (uint e = tid; e < BM * PK; e += 256) {
                        const uint i = e / PK;
                        const uint k = e % PK;
                        float val = 0.0;
                        if (t0 + i < len && n0 + k0 + k < p.dstate) {
                            val = wv[((b * p.seqlen + span_pos(span, t0 + i)) * p.ngroups + grp) * p.dstate + n0 + k0 + k];
                        }
                        Us[e] = val;
                    }
                    barrier();
                    [[unroll]] for (uint k = 0; k < PK; ++k) {
                        float a[TM];
                        float bb[TK];
                        [[unroll]] for (uint i = 0; i < TM; ++i) {
                            a[i] = Us[(ty * TM + i) * PK + k];
                        }
                        [[unroll]] for (uint j = 0; j < TK; ++j) {
                            bb[j] = Rs[(tx + 16 * j) * RS + k0 + k];
                        }
                        [[unroll]] for (uint i = 0; i < TM; ++i) {
                            [[unroll]] for (uint j = 0; j < TK; ++j) {
                                cb[i * TK + j] = fma(a[i], bb[j], cb[i * TK + j]);
                            }
                        }
                    }
                }
                barrier();
            }
            // The heads' weighted products summed before the product with R (B and C are the group's, shared by
            // its heads): one BM x BN x BK product per source tile, not one per head.
            float psum[TM * TK];
            [[unroll]] for (uint i = 0; i < TM * TK; ++i) {
                psum[i] = 0.0;
            }
            for (uint hh = 0; hh < HW; ++hh) {
                const uint head = headBase + hh;
                const uint cs = ((b * p.nheads + head) * p.nchunks + c) * p.chunk;
                for (uint e = tid; e < BM; e += 256) {
                    const bool ok = t0 + e < len;
                    dAi[e] = ok ? dA_cs[cs + t0 + e] : 0.0;
                    dAiLo[e] = ok ? dA_cs_lo[cs + t0 + e] : 0.0;
                    dti[e] = ok ? dt_out[cs + t0 + e] : 0.0;
                }
                for (uint e = tid; e < BK; e += 256) {
                    const bool ok = s0 + e < len;
                    dAj[e] = ok ? dA_cs[cs + s0 + e] : 0.0;
                    dAjLo[e] = ok ? dA_cs_lo[cs + s0 + e] : 0.0;
                    dtj[e] = ok ? dt_out[cs + s0 + e] : 0.0;
                }
                float pacc[TM * TK];
                [[unroll]] for (uint i = 0; i < TM * TK; ++i) {
                    pacc[i] = 0.0;
                }
                for (uint k0 = 0; k0 < p.headdim; k0 += PK) {
                    for (uint e = tid; e < BM * PK; e += 256) {
                        const uint i = e / PK;
                        const uint k = e % PK;
                        float val = 0.0;
                        uint pos;
                        if (t0 + i < len && k0 + k < p.headdim && g_at(span_pos(span, t0 + i), ushift, p.seqlen, pos)) {
                            val = u[((b * p.seqlen + pos) * p.nheads + head) * p.headdim + k0 + k];
                        }
                        Us[e] = val;
                    }
                    for (uint e = tid; e < BK * PK; e += 256) {
                        const uint j = e / PK;
                        const uint k = e % PK;
                        float val = 0.0;
                        uint pos;
                        if (s0 + j < len && k0 + k < p.headdim && g_at(span_pos(span, s0 + j), vshift, p.seqlen, pos)) {
                            val = v[((b * p.seqlen + pos) * p.nheads + head) * p.headdim + k0 + k];
                        }
                        Vs[k * (BK + 1) + j] = val;
                    }
                    barrier();
                    [[unroll]] for (uint k = 0; k < PK; ++k) {
                        float a[TM];
                        float bb[TK];
                        [[unroll]] for (uint i = 0; i < TM; ++i) {
                            a[i] = Us[(ty * TM + i) * PK + k];
                        }
                        [[unroll]] for (uint j = 0; j < TK; ++j) {
                            bb[j] = Vs[k * (BK + 1) + tx + 16 * j];
                        }
                        [[unroll]] for (uint i = 0; i < TM; ++i) {
                            [[unroll]] for (uint j = 0; j < TK; ++j) {
                                pacc[i * TK + j] = fma(a[i], bb[j], pacc[i * TK + j]);
                            }
                        }
                    }
                    barrier();
                }
                [[unroll]] for (uint i = 0; i < TM; ++i) {
                    const uint ti = ty * TM + i;
                    [[unroll]] for (uint j = 0; j < TK; ++j) {
                        const uint sj = tx + 16 * j;
                        const float diff = cs_diff(dAi[ti], dAiLo[ti], dAj[sj], dAjLo[sj]);
                        const bool keep = (REVERSE == 0 ? s0 + sj <= t0 + ti : s0 + sj >= t0 + ti) && s0 + sj < len;
                        pacc[i * TK + j] = !keep ? 0.0
                            : REVERSE == 0 ? pacc[i * TK + j] * exp(min(diff, 0.0)) * dtj[sj]
                                           : pacc[i * TK + j] * exp(min(-diff, 0.0)) * dti[ti];
                        psum[i * TK + j] += pacc[i * TK + j];
                    }
                }
                if (REVERSE != 0) {
                    barrier();   // the weighting read dAi, dti, dAj, dtj, which the next head writes
                }
                if (REVERSE == 0) {
                    // M = weighted (g . x) times C . B; row prefix sums over the source positions (plus the carry of
                    // earlier source tiles) give, for k = s0 + j + 1, sum_{j' < k} M[i, j']; summing rows i >= k gives
                    // this tile's share of straddle[k].
                    [[unroll]] for (uint i = 0; i < TM; ++i) {
                        [[unroll]] for (uint j = 0; j < TK; ++j) {
                            Ps[(ty * TM + i) * PS + tx + 16 * j] = pacc[i * TK + j] * cb[i * TK + j];
                        }
                    }
                    barrier();
                    // Row prefix sums, RSEG threads per row: each scans SL columns, then adds the carry and the
                    // totals of the segments before it (segment totals staged in Us, free until the next head).
                    if (tid < BM * RSEG) {
                        const uint r = tid / RSEG;
                        const uint q = tid % RSEG;
                        float run = 0.0;
                        for (uint j = q * SL; j < q * SL + SL; ++j) {
                            run += Ps[r * PS + j];
                            Ps[r * PS + j] = run;
                        }
                        Us[tid] = run;
                    }
                    barrier();
                    if (tid < BM * RSEG) {
                        const uint r = tid / RSEG;
                        const uint q = tid % RSEG;
                        float off = carry[hh * BM + r];
                        for (uint k = 0; k < q; ++k) {
                            off += Us[r * RSEG + k];
                        }
                        for (uint j = q * SL; j < q * SL + SL; ++j) {
                            Ps[r * PS + j] += off;
                        }
                    }
                    barrier();
                    if (tid < BM) {
                        carry[hh * BM + tid] = Ps[tid * PS + BK - 1];
                    }
                    // Masked column sums, CSEG threads per column over RL rows each, then a fixed-order total.
                    {
                        const uint col = tid % BK;
                        const uint seg = tid / BK;
                        const uint k = s0 + col + 1;
                        float part = 0.0;
                        for (uint i = seg * RL; i < min(seg * RL + RL, BM); ++i) {
                            if (t0 + i >= k && t0 + i < len) {
                                part += Ps[i * PS + col];
                            }
                        }
                        Vs[seg * BK + col] = part;
                    }
                    barrier();
                    if (tid < BK) {
                        const uint k = s0 + tid + 1;
                        if (k < len) {
                            float sum = 0.0;
                            for (uint q = 0; q < CSEG; ++q) {
                                sum += Vs[q * BK + tid];
                            }
                            straddle[((cs + k) * tilesT + tt) * tilesN + tn] = sum;
                        }
                    }
                    barrier();
                }
            }
            [[unroll]] for (uint i = 0; i < TM; ++i) {
                [[unroll]] for (uint j = 0; j < TK; ++j) {
                    Ps[(ty * TM + i) * PS + tx + 16 * j] = psum[i * TK + j];
                }
            }
            barrier();
            [[unroll]] for (uint k = 0; k < BK; ++k) {
                float a[TM];
                float bb[TN];
                [[unroll]] for (uint i = 0; i < TM; ++i) {
                    a[i] = Ps[(ty * TM + i) * PS + k];
                }
                [[unroll]] for (uint j = 0; j < TN; ++j) {
                    bb[j] = Rs[k * RS + tx + 16 * j];
                }
                [[unroll]] for (uint i = 0; i < TM; ++i) {
                    [[unroll]] for (uint j = 0; j < TN; ++j) {
                        acc[i * TN + j] = fma(a[i], bb[j], acc[i * TN + j]);
                    }
                }
            }
            barrier();   // Ps and Rs are the next source tile's
        }

        [[unroll]] for (uint i = 0; i < TM; ++i) {
            const uint t = t0 + ty * TM + i;
            [[unroll]] for (uint j = 0; j < TN; ++j) {
                const uint nj = n0 + tx + 16 * j;
                if (t < len && nj < p.dstate) {
                    const uint o = (((b * splits + sp) * p.seqlen + span_pos(span, t)) * p.ngroups + grp) * p.dstate + nj;
                    outp[o] = SSD_HAS(p.flags, SSD_ACCUMULATE) ? outp[o] + acc[i * TN + j] : acc[i * TN + j];
                }
            }
        }
    }
}
