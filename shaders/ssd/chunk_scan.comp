#version 450
// SSD stage 4, chunk_scan: the output of every position, fused in one workgroup per (t tile, p tile, chunk,
// batch, block of HB heads of one group):
//   y[t, p] = exp(dA_cs[t]) sum_n C[t, n] S_in[p, n]                                   (state entering the chunk)
//           + sum_{s <= t in chunk} (C[t] . B[s]) exp(dA_cs[t] - dA_cs[s]) dt_out[s] x[s, p]   (intra-chunk)
//           + D x[t, p] ;   y *= silu(z[t, p]) when z is given.
// C.B^T, the causal decay mask and the product with x happen in shared memory tile by tile: no (Q x Q) matrix
// is ever written out. C.B^T belongs to the group, so each tile of it is computed once and applied to all HB
// heads of the block (each with its own decay), which divides its cost by HB. 256 invocations as 16 x 16; each
// owns a TM x TN block of the BM x BN output tile (rows ty*TM + i, columns tx + 16 j, so shared reads are
// broadcasts or consecutive).
//
// REVERSE = 1 is the same product run backwards in time, which is the backward pass's dx (see docs/DESIGN.md and
// SsdOp.Backward): with g = dy (gated), dS_next = the gradient of the state leaving the chunk,
//   r[s, p] = sum_{t >= s in chunk} (B[s] . C[t]) exp(dA_cs[t] - dA_cs[s]) g[t, p] + exp(dA_cs[last] - dA_cs[s]) B[s] . dS_next[p]
//   dx[s, p] = dt_out[s] r[s, p] + D g[s, p] ;  ddt_part[s, tile] = sum_{p in tile} x[s, p] r[s, p]
// The bindings then hold other tensors: ChunkScanBindings.Dx (C#) and the REVERSE names below (g_in, x_fwd, dx,
// ddt_part) say which.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"
#include "ssd_common.glsl"

layout(local_size_x = 256) in;
layout(constant_id = 0) const uint BM = 64;   // positions t per tile (multiple of 16)
layout(constant_id = 1) const uint BN = 64;   // headdim per tile (multiple of 16)
layout(constant_id = 2) const uint BK = 32;   // source positions s per stage (multiple of 16)
layout(constant_id = 3) const uint NK = 32;   // d_state slice per stage
layout(constant_id = 4) const uint HB = 1;    // heads per workgroup (divides heads per group)
layout(constant_id = 5) const uint REVERSE = 0;   // 1: the backward's dx (above)
layout(constant_id = 6) const uint G_SHIFT = 0;   // REVERSE: g read one step away (g_at)

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer Cm { float C[]; };
layout(std430, binding = 2) readonly buffer Bm { float B[]; };
layout(std430, binding = 3) readonly buffer States { float states[]; };
layout(std430, binding = 4) readonly buffer DtOut { float dt_out[]; };
layout(std430, binding = 5) readonly buffer DaCs { float dA_cs[]; };
layout(std430, binding = 6) readonly buffer Dv { float D[]; };
layout(std430, binding = 7) readonly buffer Z { float z[]; };
layout(std430, binding = 8) buffer Y { float y[]; };   // REVERSE: dx (with bit 5, added to what it holds)
layout(std430, binding = 9) writeonly buffer Aux { float aux[]; };   // forward: y before the gate; REVERSE: ddt_part
layout(std430, binding = 10) readonly buffer DaCsLo { float dA_cs_lo[]; };

// REVERSE's names for the bindings whose role changes (B and C swap too: rows of the product read C, columns B).
#define g_in x          // the gated output gradient, read where x is
#define x_fwd z         // the forward's x (for ddt), read where z is
#define dx y
#define ddt_part aux

layout(push_constant) uniform Push {
    uint batch, seqlen, nheads, ngroups, headdim, dstate, chunk, nchunks;
    uint flags;   // SsdFlags (ssd_flags.glsl)
} p;

const uint TM = BM / 16;
const uint TN = BN / 16;
const uint TK = BK / 16;
const uint KP = (BK > BN ? BK : BN) + 1;   // k-major rows of Bs / Ss, padded against bank conflicts

shared float Cs[BM * NK];    // C[t][n]
shared float Bs[NK * KP];    // B[s][n] stored as [n][s], or S_in[p][n] stored as [n][p]
shared float Ps[BM * BK];    // decayed C.B^T tile [t][s]
shared float Xs[BK * BN];    // x[s][p]
shared float dAt[HB * BM];
shared float dAtLo[HB * BM];
shared float dAs[HB * BK];
shared float dAsLo[HB * BK];
shared float dts[HB * BK];

void load_c(uint row0, uint len, ChunkSpan span, uint b, uint grp, uint n0) {
    for (uint e = gl_LocalInvocationID.x; e < BM * NK; e += 256) {
        const uint i = e / NK;
        const uint k = e % NK;
        float v = 0.0;
        if (row0 + i < len && n0 + k < p.dstate) {
            v = C[((b * p.seqlen + span_pos(span, row0 + i)) * p.ngroups + grp) * p.dstate + n0 + k];
        }
        Cs[e] = v;
    }
}

void main() {
    const uint tid = gl_LocalInvocationID.x;
    const uint tx = tid % 16;
    const uint ty = tid / 16;
    const uint tilesT = (p.chunk + BM - 1) / BM;
    const uint tilesP = (p.headdim + BN - 1) / BN;
    const uint blocks = p.nheads / HB;
    const uint items = tilesT * tilesP * p.nchunks * p.batch * blocks;
    const uint hpg = p.nheads / p.ngroups;

    for (uint w = gl_WorkGroupID.x; w < items; w += gl_NumWorkGroups.x) {
        uint r = w;
        const uint tp = r % tilesP; r /= tilesP;
        const uint tt = r % tilesT; r /= tilesT;
        const uint c = r % p.nchunks; r /= p.nchunks;
        const uint head0 = (r % blocks) * HB;
        const uint b = r / blocks;
        const uint grp = head0 / hpg;
        const ChunkSpan span = chunk_span(c, p.chunk, p.nchunks, p.seqlen, SSD_HAS(p.flags, SSD_MIRRORED));
        const uint len = span.len;
        const uint t0 = tt * BM;
        if (t0 >= len) {
            continue;   // uniform across the workgroup: a tile wholly past the sequence end
        }
        const uint p0 = tp * BN;

        for (uint e = tid; e < HB * BM; e += 256) {
            const uint hb = e / BM;
            const uint i = e % BM;
            const uint cs = ((b * p.nheads + head0 + hb) * p.nchunks + c) * p.chunk;
            dAt[e] = t0 + i < len ? dA_cs[cs + t0 + i] : 0.0;
            dAtLo[e] = t0 + i < len ? dA_cs_lo[cs + t0 + i] : 0.0;
        }

        float acc[HB * TM * TN];
        [[unroll]] for (uint i = 0; i < HB * TM * TN; ++i) {
            acc[i] = 0.0;
        }

        // State term: C[t, :] . S_in[p, :] for each head, over d_state in NK slices; C is loaded once per slice.
        for (uint n0 = 0; n0 < p.dstate; n0 += NK) {
            load_c(t0, len, span, b, grp, n0);
            [[unroll]] for (uint hb = 0; hb < HB; ++hb) {
                const uint sbase = ((b * p.nchunks + c) * p.nheads + head0 + hb) * p.headdim;
                for (uint e = tid; e < BN * NK; e += 256) {
                    const uint j = e / NK;
                    const uint k = e % NK;
                    float v = 0.0;
                    if (p0 + j < p.headdim && n0 + k < p.dstate) {
                        v = states[(sbase + p0 + j) * p.dstate + n0 + k];
                    }
                    Bs[k * KP + j] = v;
                }
                barrier();
                [[unroll]] for (uint k = 0; k < NK; ++k) {
                    float a[TM];
                    float bb[TN];
                    [[unroll]] for (uint i = 0; i < TM; ++i) {
                        a[i] = Cs[(ty * TM + i) * NK + k];
                    }
                    [[unroll]] for (uint j = 0; j < TN; ++j) {
                        bb[j] = Bs[k * KP + tx + 16 * j];
                    }
                    [[unroll]] for (uint i = 0; i < TM; ++i) {
                        [[unroll]] for (uint j = 0; j < TN; ++j) {
                            acc[(hb * TM + i) * TN + j] = fma(a[i], bb[j], acc[(hb * TM + i) * TN + j]);
                        }
                    }
                }
                barrier();
            }
        }
        [[unroll]] for (uint hb = 0; hb < HB; ++hb) {
            const uint lastIdx = ((b * p.nheads + head0 + hb) * p.nchunks + c) * p.chunk + len - 1;
            const float last = dA_cs[lastIdx];
            const float last_lo = dA_cs_lo[lastIdx];
            [[unroll]] for (uint i = 0; i < TM; ++i) {
                const uint ti = hb * BM + ty * TM + i;
                const float decay = REVERSE == 0 ? exp(dAt[ti]) : exp(min(cs_diff(last, last_lo, dAt[ti], dAtLo[ti]), 0.0));
                [[unroll]] for (uint j = 0; j < TN; ++j) {
                    acc[(hb * TM + i) * TN + j] *= decay;
                }
            }
        }

        // Intra-chunk term, causal: source tiles up to the last row of this tile (REVERSE: from its first row on).
        const uint sbegin = REVERSE == 0 ? 0 : t0 / BK * BK;
        const uint send = REVERSE == 0 ? min(t0 + BM, len) : len;
        for (uint s0 = sbegin; s0 < send; s0 += BK) {
            for (uint e = tid; e < HB * BK; e += 256) {
                const uint hb = e / BK;
                const uint i = e % BK;
                const uint cs = ((b * p.nheads + head0 + hb) * p.nchunks + c) * p.chunk;
                const bool ok = s0 + i < len;
                dAs[e] = ok ? dA_cs[cs + s0 + i] : 0.0;
                dAsLo[e] = ok ? dA_cs_lo[cs + s0 + i] : 0.0;
                dts[e] = ok ? dt_out[cs + s0 + i] : 0.0;
            }
            float pacc[TM * TK];
            [[unroll]] for (uint i = 0; i < TM * TK; ++i) {
                pacc[i] = 0.0;
            }
            for (uint n0 = 0; n0 < p.dstate; n0 += NK) {
                load_c(t0, len, span, b, grp, n0);
                for (uint e = tid; e < BK * NK; e += 256) {
                    const uint s = e / NK;
                    const uint k = e % NK;
                    float v = 0.0;
                    if (s0 + s < len && n0 + k < p.dstate) {
                        v = B[((b * p.seqlen + span_pos(span, s0 + s)) * p.ngroups + grp) * p.dstate + n0 + k];
                    }
                    Bs[k * KP + s] = v;
                }
                barrier();
                [[unroll]] for (uint k = 0; k < NK; ++k) {
                    float a[TM];
                    float bb[TK];
                    [[unroll]] for (uint i = 0; i < TM; ++i) {
                        a[i] = Cs[(ty * TM + i) * NK + k];
                    }
                    [[unroll]] for (uint j = 0; j < TK; ++j) {
                        bb[j] = Bs[k * KP + tx + 16 * j];
                    }
                    [[unroll]] for (uint i = 0; i < TM; ++i) {
                        [[unroll]] for (uint j = 0; j < TK; ++j) {
                            pacc[i * TK + j] = fma(a[i], bb[j], pacc[i * TK + j]);
                        }
                    }
                }
                barrier();
            }
            [[unroll]] for (uint hb = 0; hb < HB; ++hb) {
                // Decay mask of this head: keep s <= t, weight exp(dA_t - dA_s) dt_s (argument <= 0); REVERSE keeps
                // s >= t with weight exp(dA_s - dA_t), dt applied in the epilogue.
                [[unroll]] for (uint i = 0; i < TM; ++i) {
                    const uint ti = ty * TM + i;
                    [[unroll]] for (uint j = 0; j < TK; ++j) {
                        const uint sj = tx + 16 * j;
                        const float diff = cs_diff(dAt[hb * BM + ti], dAtLo[hb * BM + ti], dAs[hb * BK + sj], dAsLo[hb * BK + sj]);
                        const bool keep = (REVERSE == 0 ? s0 + sj <= t0 + ti : s0 + sj >= t0 + ti) && s0 + sj < len;
                        Ps[ti * BK + sj] = !keep ? 0.0
                            : REVERSE == 0 ? pacc[i * TK + j] * exp(min(diff, 0.0)) * dts[hb * BK + sj]
                                           : pacc[i * TK + j] * exp(min(-diff, 0.0));
                    }
                }
                for (uint e = tid; e < BK * BN; e += 256) {
                    const uint s = e / BN;
                    const uint j = e % BN;
                    float v = 0.0;
                    uint pos;
                    if (s0 + s < len && p0 + j < p.headdim && g_at(span_pos(span, s0 + s), REVERSE == 0 ? 0 : G_SHIFT, p.seqlen, pos)) {
                        v = x[((b * p.seqlen + pos) * p.nheads + head0 + hb) * p.headdim + p0 + j];   // REVERSE: g_in
                    }
                    Xs[e] = v;
                }
                barrier();
                [[unroll]] for (uint k = 0; k < BK; ++k) {
                    float a[TM];
                    float bb[TN];
                    [[unroll]] for (uint i = 0; i < TM; ++i) {
                        a[i] = Ps[(ty * TM + i) * BK + k];
                    }
                    [[unroll]] for (uint j = 0; j < TN; ++j) {
                        bb[j] = Xs[k * BN + tx + 16 * j];
                    }
                    [[unroll]] for (uint i = 0; i < TM; ++i) {
                        [[unroll]] for (uint j = 0; j < TN; ++j) {
                            acc[(hb * TM + i) * TN + j] = fma(a[i], bb[j], acc[(hb * TM + i) * TN + j]);
                        }
                    }
                }
                barrier();
            }
        }

        // Epilogue: skip connection and gate (REVERSE: dx and this tile's share of ddt).
        if (REVERSE == 0) {
            [[unroll]] for (uint hb = 0; hb < HB; ++hb) {
                const uint head = head0 + hb;
                [[unroll]] for (uint i = 0; i < TM; ++i) {
                    const uint t = t0 + ty * TM + i;
                    [[unroll]] for (uint j = 0; j < TN; ++j) {
                        const uint pj = p0 + tx + 16 * j;
                        if (t < len && pj < p.headdim) {
                            const uint o = ((b * p.seqlen + span_pos(span, t)) * p.nheads + head) * p.headdim + pj;
                            float v = acc[(hb * TM + i) * TN + j];
                            if (SSD_HAS(p.flags, SSD_D_ANY)) {
                                v += D[SSD_HAS(p.flags, SSD_D_HEAD_DIM) ? head * p.headdim + pj : head] * x[o];
                            }
                            if (SSD_HAS(p.flags, SSD_SAVE_UNGATED)) {
                                aux[o] = v;
                            }
                            if (SSD_HAS(p.flags, SSD_Z)) {
                                v *= silu(z[o]);
                            }
                            y[o] = v;
                        }
                    }
                }
            }
        } else {
            [[unroll]] for (uint hb = 0; hb < HB; ++hb) {
                const uint head = head0 + hb;
                const uint cs = ((b * p.nheads + head) * p.nchunks + c) * p.chunk;
                [[unroll]] for (uint i = 0; i < TM; ++i) {
                    const uint t = t0 + ty * TM + i;
                    float dot = 0.0;
                    if (t < len) {
                        const float dtt = dt_out[cs + t];
                        [[unroll]] for (uint j = 0; j < TN; ++j) {
                            const uint pj = p0 + tx + 16 * j;
                            if (pj < p.headdim) {
                                const uint o = ((b * p.seqlen + span_pos(span, t)) * p.nheads + head) * p.headdim + pj;
                                const float r = acc[(hb * TM + i) * TN + j];
                                dot = fma(x_fwd[o], r, dot);
                                float v = dtt * r;
                                // D g rides here only for an unshifted g (the host never folds D into a shifted
                                // run): a shifted g's second address cost registers the whole kernel pays for.
                                if (G_SHIFT == 0 && SSD_HAS(p.flags, SSD_D_ANY)) {
                                    v += D[SSD_HAS(p.flags, SSD_D_HEAD_DIM) ? head * p.headdim + pj : head] * g_in[o];
                                }
                                dx[o] = SSD_HAS(p.flags, SSD_ACCUMULATE) ? dx[o] + v : v;
                            }
                        }
                    }
                    Ps[(ty * TM + i) * 16 + tx] = dot;   // BK >= 16: a row of 16 partial dots fits
                }
                barrier();
                // Fixed-order sum over the 16 column threads: deterministic.
                if (tid < BM && t0 + tid < len) {
                    float sum = 0.0;
                    [[unroll]] for (uint k = 0; k < 16; ++k) {
                        sum += Ps[tid * 16 + k];
                    }
                    ddt_part[(cs + t0 + tid) * tilesP + tp] = sum;
                }
                barrier();
            }
        }
    }
}
