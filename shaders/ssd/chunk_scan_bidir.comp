#version 450
// Bidirectional SSD, the output pass: both scans of every position in one workgroup per (t tile, p tile, chunk,
// batch, block of HB heads of one group), no flipped copies. In original time the reverse scan is
//   R_t = a'_t R_{t+1} + dt'_t x_t B'_t^T      (a', dt', B', C' the reverse scan's own, or the forward's)
// With A = dA_cs (inclusive within-chunk cumsum) and E = the exclusive one (E_t = A_{t-1}, 0 at the chunk start):
//   sum (Bi-Mamba2):  y_t = C_t . S_t + C'_t . R_t + D x_t
//     forward: state exp(A_t) C_t . S_in,   intra s <= t, weight exp(A_t - A_s) dt_s
//     reverse: state exp(A'_last - E'_t) C'_t . R_next,   intra s >= t, weight exp(E'_s - E'_t) dt'_s
//   shift (Hydra):    y_t = C_{t-1} . S_{t-1} + C'_{t+1} . R_{t+1} + D x_t   (terms outside [0, L) are 0)
//     forward: row vector C_{t-1}, state exp(E_t), intra s < t, weight exp(E_t - A_s) dt_s
//     reverse: row vector C'_{t+1}, state exp(A'_last - A'_t), intra s > t, weight exp(E'_s - A'_t) dt'_s
// S_in is the state entering the chunk from the left, R_next the reverse state entering it from the right. The
// reverse scan's dt, cumsum and states come from a mirrored causal run (see ChunkSpan): chunk c is its chunk
// nchunks-1-c and position t its position m(t) = len-1-t, where its cumsum M[m(t)] = sum_{u >= t} dA'_u = A'_last - E'_t.
// So exp(E'_s - E'_t) = exp(M[m(t)] - M[m(s)]), exp(A'_last - E'_t) = exp(M[m(t)]), and with A'_t = E'_{t+1}:
// exp(A'_last - A'_t) = exp(M[m(t) - 1]) (0 exponent at the chunk's last position). Every exp argument is <= 0. Both directions' (row . source) products are combined
// into one weighted tile before the product with x, which both directions share; with SHARED (sum mode, no
// reverse tensors) the two products are the same C.B^T tile and it is computed once. y *= silu(z) at the end.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"
#include "ssd_common.glsl"

layout(local_size_x = 256) in;
layout(constant_id = 0) const uint BM = 64;   // positions t per tile (multiple of 16)
layout(constant_id = 1) const uint BN = 64;   // headdim per tile (multiple of 16)
layout(constant_id = 2) const uint BK = 32;   // source positions per stage (multiple of 16)
layout(constant_id = 3) const uint NK = 16;   // d_state slice per stage
layout(constant_id = 4) const uint HB = 1;    // heads per workgroup (divides heads per group)
layout(constant_id = 5) const uint SHIFT = 0; // 1: Hydra's shifted form
layout(constant_id = 6) const uint SHARED = 1;   // 1: one C.B^T tile serves both directions

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer Cf { float C[]; };
layout(std430, binding = 2) readonly buffer Bf { float B[]; };
layout(std430, binding = 3) readonly buffer Cr { float Crev[]; };
layout(std430, binding = 4) readonly buffer Br { float Brev[]; };
layout(std430, binding = 5) readonly buffer StatesF { float states_f[]; };   // entering each chunk from the left
layout(std430, binding = 6) readonly buffer StatesB { float states_b[]; };   // the mirrored run's S_in: R_next
layout(std430, binding = 7) readonly buffer DtF { float dt_f[]; };
layout(std430, binding = 8) readonly buffer DaF { float da_f[]; };
layout(std430, binding = 9) readonly buffer DaFLo { float da_f_lo[]; };
layout(std430, binding = 10) readonly buffer DtB { float dt_b[]; };
layout(std430, binding = 11) readonly buffer DaB { float da_b[]; };
layout(std430, binding = 12) readonly buffer DaBLo { float da_b_lo[]; };
layout(std430, binding = 13) readonly buffer Dv { float D[]; };
layout(std430, binding = 14) readonly buffer Z { float z[]; };
layout(std430, binding = 15) writeonly buffer Y { float y[]; };
layout(std430, binding = 16) writeonly buffer YPre { float y_pre[]; };

layout(push_constant) uniform Push {
    uint batch, seqlen, nheads, ngroups, headdim, dstate, chunk, nchunks;
    uint flags;   // SsdFlags (ssd_flags.glsl)
} p;

const uint TM = BM / 16;
const uint TN = BN / 16;
const uint TK = BK / 16;
const uint KP = (BK > BN ? BK : BN) + 1;
const uint CB = SHARED != 0 ? 1 : BM * NK;   // the reverse tiles exist only when the products differ
const uint BB = SHARED != 0 ? 1 : NK * KP;

shared float CsF[BM * NK];   // forward row vectors [t][n]
shared float CsB[CB];        // reverse row vectors
shared float BsF[NK * KP];   // forward sources [n][s], or S_in [n][p]
shared float BsB[BB];        // reverse sources, or R_next
shared float Ps[BM * BK];    // the combined, weighted tile [t][s]
shared float Xs[BK * BN];    // x[s][p]
// Per head: row exponents (forward, reverse) as hi/lo pairs, and per source position the same plus dt.
shared float rowF[HB * BM];
shared float rowFLo[HB * BM];
shared float rowB[HB * BM];
shared float rowBLo[HB * BM];
shared float srcF[HB * BK];
shared float srcFLo[HB * BK];
shared float srcB[HB * BK];
shared float srcBLo[HB * BK];
shared float dtsF[HB * BK];
shared float dtsB[HB * BK];

// Row vectors of both directions for rows t0.. (C at t - SHIFT, C' at t + SHIFT), zero past the chunk or sequence.
void load_rows(uint t0, uint len, uint start, uint b, uint grp, uint n0) {
    for (uint e = gl_LocalInvocationID.x; e < BM * NK; e += 256) {
        const uint i = e / NK;
        const uint k = e % NK;
        const int pos = int(start + t0 + i);
        const bool row = t0 + i < len && n0 + k < p.dstate;
        float f = 0.0;
        const int pf = pos - int(SHIFT);
        if (row && pf >= 0) {
            f = C[((b * p.seqlen + uint(pf)) * p.ngroups + grp) * p.dstate + n0 + k];
        }
        CsF[e] = f;
        if (SHARED == 0) {
            float r = 0.0;
            const int pr = pos + int(SHIFT);
            if (row && pr < int(p.seqlen)) {
                r = Crev[((b * p.seqlen + uint(pr)) * p.ngroups + grp) * p.dstate + n0 + k];
            }
            CsB[e] = r;
        }
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
        const uint start = c * p.chunk;
        const uint len = min(p.chunk, p.seqlen - start);
        const uint t0 = tt * BM;
        if (t0 >= len) {
            continue;   // uniform across the workgroup
        }
        const uint p0 = tp * BN;

        // Row exponents: forward A_t (sum) or E_t (shift); reverse, in the mirrored cumsum, M[m(t)] (sum) or
        // M[m(t) - 1] (shift, 0 at the chunk's last position).
        const uint cm = p.nchunks - 1 - c;   // the mirrored run's chunk
        for (uint e = tid; e < HB * BM; e += 256) {
            const uint hb = e / BM;
            const uint i = e % BM;
            const uint cs = ((b * p.nheads + head0 + hb) * p.nchunks + c) * p.chunk;
            const uint csm = ((b * p.nheads + head0 + hb) * p.nchunks + cm) * p.chunk;
            const uint t = t0 + i;
            const bool ok = t < len;
            const bool prev = ok && t > 0;
            const float aF = ok ? da_f[cs + t] : 0.0, aFLo = ok ? da_f_lo[cs + t] : 0.0;
            const float eF = prev ? da_f[cs + t - 1] : 0.0, eFLo = prev ? da_f_lo[cs + t - 1] : 0.0;
            const uint m = len - 1 - t;
            const bool mb = ok && (SHIFT == 0 || m > 0);
            const uint mi = SHIFT == 0 ? m : m - 1;
            rowF[e] = SHIFT == 0 ? aF : eF;
            rowFLo[e] = SHIFT == 0 ? aFLo : eFLo;
            rowB[e] = mb ? da_b[csm + mi] : 0.0;
            rowBLo[e] = mb ? da_b_lo[csm + mi] : 0.0;
        }
        barrier();

        // State decays per head and row, in registers: the shared row-vector tile is scaled as it is read.
        float decF[HB * TM];
        float decB[HB * TM];
        [[unroll]] for (uint hb = 0; hb < HB; ++hb) {
            [[unroll]] for (uint i = 0; i < TM; ++i) {
                const uint ri = hb * BM + ty * TM + i;
                decF[hb * TM + i] = exp(min(rowF[ri], 0.0));
                decB[hb * TM + i] = exp(min(rowB[ri], 0.0));
            }
        }

        float acc[HB * TM * TN];
        [[unroll]] for (uint i = 0; i < HB * TM * TN; ++i) {
            acc[i] = 0.0;
        }

        // State terms: rowvec . S_in (forward) and rowvec' . R_next (reverse) per head, over d_state in NK slices.
        for (uint n0 = 0; n0 < p.dstate; n0 += NK) {
            load_rows(t0, len, start, b, grp, n0);
            [[unroll]] for (uint hb = 0; hb < HB; ++hb) {
                const uint sbase = ((b * p.nchunks + c) * p.nheads + head0 + hb) * p.headdim;
                const uint sbaseB = ((b * p.nchunks + cm) * p.nheads + head0 + hb) * p.headdim;
                for (uint e = tid; e < BN * NK; e += 256) {
                    const uint j = e / NK;
                    const uint k = e % NK;
                    const bool ok = p0 + j < p.headdim && n0 + k < p.dstate;
                    BsF[k * KP + j] = ok ? states_f[(sbase + p0 + j) * p.dstate + n0 + k] : 0.0;
                    Xs[k * BN + j] = ok ? states_b[(sbaseB + p0 + j) * p.dstate + n0 + k] : 0.0;   // NK <= BK
                }
                barrier();
                [[unroll]] for (uint k = 0; k < NK; ++k) {
                    float af[TM];
                    float ab[TM];
                    float bf[TN];
                    float bb[TN];
                    [[unroll]] for (uint i = 0; i < TM; ++i) {
                        af[i] = CsF[(ty * TM + i) * NK + k] * decF[hb * TM + i];
                        ab[i] = (SHARED != 0 ? CsF[(ty * TM + i) * NK + k] : CsB[(ty * TM + i) * NK + k]) * decB[hb * TM + i];
                    }
                    [[unroll]] for (uint j = 0; j < TN; ++j) {
                        bf[j] = BsF[k * KP + tx + 16 * j];
                        bb[j] = Xs[k * BN + tx + 16 * j];
                    }
                    [[unroll]] for (uint i = 0; i < TM; ++i) {
                        [[unroll]] for (uint j = 0; j < TN; ++j) {
                            acc[(hb * TM + i) * TN + j] = fma(af[i], bf[j], fma(ab[i], bb[j], acc[(hb * TM + i) * TN + j]));
                        }
                    }
                }
                barrier();
            }
        }

        // Intra-chunk terms: every source tile of the chunk (each is on one side or both sides of the rows).
        for (uint s0 = 0; s0 < len; s0 += BK) {
            for (uint e = tid; e < HB * BK; e += 256) {
                const uint hb = e / BK;
                const uint i = e % BK;
                const uint cs = ((b * p.nheads + head0 + hb) * p.nchunks + c) * p.chunk;
                const uint csm = ((b * p.nheads + head0 + hb) * p.nchunks + cm) * p.chunk + len - 1;   // + m(s) = - s
                const uint s = s0 + i;
                const bool ok = s < len;
                srcF[e] = ok ? da_f[cs + s] : 0.0;
                srcFLo[e] = ok ? da_f_lo[cs + s] : 0.0;
                dtsF[e] = ok ? dt_f[cs + s] : 0.0;
                srcB[e] = ok ? da_b[csm - s] : 0.0;          // M[m(s)]
                srcBLo[e] = ok ? da_b_lo[csm - s] : 0.0;
                dtsB[e] = ok ? dt_b[csm - s] : 0.0;
            }
            float pf[TM * TK];
            float pb[TM * TK];
            [[unroll]] for (uint i = 0; i < TM * TK; ++i) {
                pf[i] = 0.0;
                pb[i] = 0.0;
            }
            for (uint n0 = 0; n0 < p.dstate; n0 += NK) {
                load_rows(t0, len, start, b, grp, n0);
                for (uint e = tid; e < BK * NK; e += 256) {
                    const uint s = e / NK;
                    const uint k = e % NK;
                    const bool ok = s0 + s < len && n0 + k < p.dstate;
                    const uint src = ((b * p.seqlen + start + s0 + s) * p.ngroups + grp) * p.dstate + n0 + k;
                    BsF[k * KP + s] = ok ? B[src] : 0.0;
                    if (SHARED == 0) {
                        BsB[k * KP + s] = ok ? Brev[src] : 0.0;
                    }
                }
                barrier();
                [[unroll]] for (uint k = 0; k < NK; ++k) {
                    float a[TM];
                    float bb[TK];
                    [[unroll]] for (uint i = 0; i < TM; ++i) {
                        a[i] = CsF[(ty * TM + i) * NK + k];
                    }
                    [[unroll]] for (uint j = 0; j < TK; ++j) {
                        bb[j] = BsF[k * KP + tx + 16 * j];
                    }
                    [[unroll]] for (uint i = 0; i < TM; ++i) {
                        [[unroll]] for (uint j = 0; j < TK; ++j) {
                            pf[i * TK + j] = fma(a[i], bb[j], pf[i * TK + j]);
                        }
                    }
                    if (SHARED == 0) {
                        [[unroll]] for (uint i = 0; i < TM; ++i) {
                            a[i] = CsB[(ty * TM + i) * NK + k];
                        }
                        [[unroll]] for (uint j = 0; j < TK; ++j) {
                            bb[j] = BsB[k * KP + tx + 16 * j];
                        }
                        [[unroll]] for (uint i = 0; i < TM; ++i) {
                            [[unroll]] for (uint j = 0; j < TK; ++j) {
                                pb[i * TK + j] = fma(a[i], bb[j], pb[i * TK + j]);
                            }
                        }
                    }
                }
                barrier();
            }
            [[unroll]] for (uint hb = 0; hb < HB; ++hb) {
                [[unroll]] for (uint i = 0; i < TM; ++i) {
                    const uint ti = ty * TM + i;
                    const uint t = t0 + ti;
                    const uint ri = hb * BM + ti;
                    [[unroll]] for (uint j = 0; j < TK; ++j) {
                        const uint sj = tx + 16 * j;
                        const uint s = s0 + sj;
                        const uint si = hb * BK + sj;
                        float v = 0.0;
                        if (s < len && t < len) {
                            const bool fwd = SHIFT == 0 ? s <= t : s < t;
                            const bool rev = SHIFT == 0 ? s >= t : s > t;
                            if (fwd) {
                                v += pf[i * TK + j] * exp(min(cs_diff(rowF[ri], rowFLo[ri], srcF[si], srcFLo[si]), 0.0)) * dtsF[si];
                            }
                            if (rev) {
                                const float prod = SHARED != 0 ? pf[i * TK + j] : pb[i * TK + j];
                                v += prod * exp(min(cs_diff(rowB[ri], rowBLo[ri], srcB[si], srcBLo[si]), 0.0)) * dtsB[si];
                            }
                        }
                        Ps[ti * BK + sj] = v;
                    }
                }
                for (uint e = tid; e < BK * BN; e += 256) {
                    const uint s = e / BN;
                    const uint j = e % BN;
                    float v = 0.0;
                    if (s0 + s < len && p0 + j < p.headdim) {
                        v = x[((b * p.seqlen + start + s0 + s) * p.nheads + head0 + hb) * p.headdim + p0 + j];
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

        // Epilogue: skip connection and gate.
        [[unroll]] for (uint hb = 0; hb < HB; ++hb) {
            const uint head = head0 + hb;
            [[unroll]] for (uint i = 0; i < TM; ++i) {
                const uint t = t0 + ty * TM + i;
                [[unroll]] for (uint j = 0; j < TN; ++j) {
                    const uint pj = p0 + tx + 16 * j;
                    if (t < len && pj < p.headdim) {
                        const uint row = (b * p.seqlen + start + t) * p.nheads + head;
                        const uint o = row * p.headdim + pj;
                        float v = acc[(hb * TM + i) * TN + j];
                        if (SSD_HAS(p.flags, SSD_D_HEAD)) {
                            v += D[head] * x[o];
                        } else if (SSD_HAS(p.flags, SSD_D_HEAD_DIM)) {
                            v += D[head * p.headdim + pj] * x[o];
                        } else if (SSD_HAS(p.flags, SSD_D_TOKEN)) {
                            v += D[row] * x[o];
                        }
                        if (SSD_HAS(p.flags, SSD_Z)) {
                            y_pre[o] = v;
                            v *= silu(z[o]);
                        }
                        y[o] = v;
                    }
                }
            }
        }
    }
}
