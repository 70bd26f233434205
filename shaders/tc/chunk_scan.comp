#version 450
// chunk_scan on tensor cores (the math of ssd/chunk_scan.comp): per (batch, chunk, head) and BM x BN tile of (t, p),
//   y[t, p] = sum_n (exp(dA_cs[t]) C[t, n]) S_in[p, n]                               (state entering the chunk)
//           + sum_{s <= t} (cb[t, s] exp(dA_cs[t] - dA_cs[s]) dt_out[s]) x[s, p]    (intra-chunk)
//           + D x[t, p] ;   y *= silu(z[t, p]) when z is given,
// with cb = C.B^T from tc/chunk_cb (once per group, not per head). Decay, mask and dt are applied in fp32 as the
// operands are staged (tc_product.glsl); the epilogues read the accumulators back through shared memory.
//
// REVERSE = 1 is the same product run backwards in time, the backward's dx (ssd/chunk_scan.comp, ChunkScanBindings):
// with g the gated output gradient and dS_next the gradient of the state leaving the chunk, for rows s of the tile
//   r[s, p] = sum_n (exp(dA_cs[last] - dA_cs[s]) B[s, n]) dS_next[p, n] + sum_{t >= s} (cb[t, s] exp(dA_cs[t] - dA_cs[s])) g[t, p]
//   dx[s, p] = dt_out[s] r[s, p] + D g[s, p] ;  ddt_part[s, tile] = sum_{p in tile} x[s, p] r[s, p]
// The bindings then hold other tensors (the REVERSE names below): g where x is, B where C is, dS_next where the
// states are, the forward's x where z is, dx where y is, the ddt parts where y before the gate is.
//
// BIDIR (a variant of its own, forward only) is a bidirectional form in one pass, both scans sharing C, B and so
// C.B^T (tc/chunk_cb with every tile). The sum form, with the reverse scan's dt, cumsum and states from a mirrored
// causal run (ChunkSpan; its per-chunk arrays at chunk nchunks-1-c, position m(t) = len-1-t, cumsum
// M[m(t)] = A'_last - E'_t):
//   y[t, p] = sum_n (exp(dA_cs[t]) C[t, n]) S_in[p, n] + sum_n (exp(M[m(t)]) C[t, n]) R_next[p, n]
//           + sum_s (cb[t, s] w[t, s]) x[s, p] + D x[t, p],
//   w[t, s] = [s <= t] exp(dA_cs[t] - dA_cs[s]) dt_out[s] + [s >= t] exp(M[m(t)] - M[m(s)]) dt_rev[s]
// (ssd/chunk_scan_bidir.comp's sum form): the two state terms are two runs of state slices, the intra-chunk term
// one run over the whole chunk, one output pass and no combine. With SHIFT, Hydra's form: row t takes the forward
// scan's output at t - 1 and the reverse scan's at t + 1 (its rows of C and cb one position before and after, their
// decays those rows', terms outside the sequence 0), so
//   w[t, s] = [s < t] cb[t-1, s] exp(dA_cs[t-1] - dA_cs[s]) dt_out[s] + [s > t] cb[t+1, s] exp(M[m(t+1)] - M[m(s)]) dt_rev[s]
// and the states' rows are C[t-1] exp(dA_cs[t-1]) (C[t-1] alone at the chunk's start) and C[t+1] exp(M[m(t+1)])
// (C[t+1] alone at its end).
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"
#include "ssd_common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint BM = 64;   // positions t per tile (REVERSE: s)
layout(constant_id = 2) const uint BN = 64;   // headdim per tile
layout(constant_id = 3) const uint BK = 32;   // d_state, then positions of the other side, per slice
layout(constant_id = 4) const uint WM = 32;
layout(constant_id = 5) const uint WN = 32;
layout(constant_id = 6) const uint TM = 16;
layout(constant_id = 7) const uint TN = 16;
layout(constant_id = 8) const uint TK = 16;
layout(constant_id = 9) const uint REVERSE = 0;   // 1: the backward's dx (above)
layout(constant_id = 10) const uint G_SHIFT = 0;  // REVERSE: g read one step away (g_at)
// REVERSE: dx added to what it holds (SSD_ACCUMULATE, the in-place bidirectional backward's reverse run). A constant:
// as a flag, the plain dx's epilogue held more registers and ran 9% slower on the H200 (docs/PERF.md).
layout(constant_id = 11) const bool ACCUMULATE = false;
layout(constant_id = 12) const bool SHIFT = false;   // BIDIR: Hydra's shift form (above)
// The forward's gate (SSD_Z: z read, y *= silu(z), y before the gate saved where asked) as a constant, so that the
// ungated forward's pipeline holds no gate; the other flags stay in the push constants.
layout(constant_id = 13) const bool GATED = false;

#include "tensor_elems.glsl"   // x, C, z, y and y before the gate (REVERSE: g, B, x, dx)
layout(std430, binding = 0) readonly buffer X { TENSOR_ELEM x[]; };
layout(std430, binding = 1) readonly buffer Cm { TENSOR_ELEM C[]; };     // REVERSE: B
layout(std430, binding = 2) readonly buffer Cb { float cb[]; };
layout(std430, binding = 3) readonly buffer States { float states[]; };
layout(std430, binding = 4) readonly buffer DtOut { float dt_out[]; };
layout(std430, binding = 5) readonly buffer DaCs { float dA_cs[]; };
layout(std430, binding = 6) readonly buffer Dv { float D[]; };
layout(std430, binding = 7) readonly buffer Z { TENSOR_ELEM z[]; };
layout(std430, binding = 8) buffer Y { TENSOR_ELEM y[]; };   // REVERSE: dx (with ACCUMULATE, added to what it holds)
layout(std430, binding = 9) writeonly buffer Aux { TENSOR_ELEM aux[]; };   // y before the gate
layout(std430, binding = 9) writeonly buffer DdtPart { float ddt_part[]; };   // REVERSE: the ddt parts (fp32 always)
layout(std430, binding = 10) readonly buffer DaCsLo { float dA_cs_lo[]; };
layout(std430, binding = 0) readonly buffer X4 { TENSOR_WORD4 x4[]; };
layout(std430, binding = 1) readonly buffer Cm4 { TENSOR_WORD4 C4[]; };
layout(std430, binding = 2) readonly buffer Cb4 { vec4 cb4[]; };
layout(std430, binding = 3) readonly buffer States4 { vec4 states4[]; };
layout(std430, binding = 7) readonly buffer Z4 { TENSOR_WORD4 z4[]; };
layout(std430, binding = 8) buffer Y4 { TENSOR_WORD4 y4[]; };
layout(std430, binding = 9) writeonly buffer Aux4 { TENSOR_WORD4 aux4[]; };
#ifdef BIDIR
layout(std430, binding = 11) readonly buffer StatesRev { float states_rev[]; };   // the mirrored run's S_in: R_next
layout(std430, binding = 12) readonly buffer DtRev { float dt_rev[]; };           // the mirrored run's dt_out
layout(std430, binding = 13) readonly buffer DaRev { float dA_rev[]; };           // ... its cumsum M, hi and lo
layout(std430, binding = 14) readonly buffer DaRevLo { float dA_rev_lo[]; };
layout(std430, binding = 11) readonly buffer StatesRev4 { vec4 states_rev4[]; };
#else
// REVERSE with SSD_DD_PARTS: dD's first level, sum_t g[t, p] x[t, p] over each subgroup's rows of a tile, at
// (b, chunk, row tile, row block, head, p): the pass that summed them apart read g and x again (docs/PERF.md).
layout(std430, binding = 11) writeonly buffer DdPart { float dd_part[]; };
#endif

#define g_in x          // REVERSE's names
#define x_fwd z
#define dx y

layout(push_constant) uniform Push {
    uint batch, seqlen, nheads, ngroups, headdim, dstate, chunk, nchunks;
    uint flags;   // SsdFlags (ssd_flags.glsl)
} p;

#define TC_QUADS       // the forward's epilogue (tc_quad)
#define TC_ROW_PARTS   // REVERSE: x . r per row, the ddt parts (dx_epilogue, tc_row_partner below)
bool store_prologue();
#define TC_RUN
// f16 operands: a slice's loads issued before the products of the slice before, the per-chunk arrays stored while
// the first slice's loads are in flight, before any word is finished (the state term's decays read them there too).
// bf16 operands and BIDIR load each slice in its turn: there the slice ahead gained nothing at the same registers
// (the forward) or cost dx a workgroup an SM (docs/PERF.md).
#if defined(BIDIR) || defined(OPERAND_BF16)
#define TC_STAGED store_prologue   // the item's first slice publishes the per-chunk arrays (main)
#else
#define TC_PIPELINED
#define TC_FETCHED store_prologue
#endif
#include "tc_product.glsl"

const uint MAX_CHUNK = 256;
#ifdef BIDIR
const bool BIDIR_ON = true;
#else
const bool BIDIR_ON = false;
#endif
// This (batch, head, chunk)'s dA_cs, its two parts summed into one fp32 value, and dt_out. The staged elements' decays
// take plain fp32 differences of it, as mamba_ssm's kernels do: the two-part difference (cs_diff) is for the exact
// mode's 1e-5, and per element its second pair of shared reads cost these kernels 2-3% (docs/PERF.md).
shared float dAq[MAX_CHUNK];
shared float dtq[MAX_CHUNK];
#ifdef BIDIR
shared float dArq[MAX_CHUNK];    // the reverse scan's M[m(s)] and dt at forward positions s, likewise
shared float dtrq[MAX_CHUNK];
#endif

ChunkSpan span;
uint b, head, grp, t0, p0, k0, cbase, sbase, cs, tileP, tilesP, chunkIdx, tileT, tilesT;
bool intra;   // which slices: the state term's (k0 over d_state) or the intra-chunk term's (k0 over positions)
bool revState;   // BIDIR: the state slices of the reverse scan (R_next)
uint csr, sbaseR;   // BIDIR: the mirrored run's per-chunk and state bases for this chunk
bool wholeP, wholeN, wholeQ;   // rows of x and g, of B, C and states, of cb start on 16-byte boundaries
bool fastA, fastB;   // this slice's rows of A, of B, wholly inside memory: TC_WORD4 at atA, atB (set_slices)
int atA, stepA, atB, stepB;

// The item's per-chunk arrays, read into registers before its first slice and stored into shared memory by that
// slice (store_prologue, before its barrier): the item waits on memory once for both, not twice. The state term's
// slices, which may come first, read their decay factors from memory instead.
const uint PRO = (MAX_CHUNK + TC_THREADS - 1) / TC_THREADS;
float proA[PRO], proLo[PRO], proDt[PRO];
#ifdef BIDIR
float proRA[PRO], proRLo[PRO], proRDt[PRO];
#endif
uint proEnd;      // positions the arrays hold this item
bool proPending;  // read, not yet stored

void load_prologue(uint end) {
    [[unroll]] for (uint q = 0; q < PRO; ++q) {
        const uint s = gl_LocalInvocationID.x + q * TC_THREADS;
        if (s < end) {
            proA[q] = dA_cs[cs + s];
            proLo[q] = dA_cs_lo[cs + s];
            proDt[q] = dt_out[cs + s];
#ifdef BIDIR
            const uint m = csr + span.len - 1 - s;
            proRA[q] = dA_rev[m];
            proRLo[q] = dA_rev_lo[m];
            proRDt[q] = dt_rev[m];
#endif
        }
    }
    proEnd = end;
    proPending = true;
}

// Safe without a barrier before it: every read of the arrays by the item before came before one of its barriers
// (its slices' own, or tc_row_dots_done after dx_epilogue).
bool store_prologue() {
    if (!proPending) {
        return false;
    }
    [[unroll]] for (uint q = 0; q < PRO; ++q) {
        const uint s = gl_LocalInvocationID.x + q * TC_THREADS;
        if (s < proEnd) {
            dAq[s] = proA[q] + proLo[q];
            dtq[s] = proDt[q];
#ifdef BIDIR
            dArq[s] = proRA[q] + proRLo[q];
            dtrq[s] = proRDt[q];
#endif
        }
    }
    proPending = false;
    return true;
}

// Causal rows of cb: element e of the word at column s of row t is cb[t, s + e] exp(dA_cs[t] - dA_cs[s + e]),
// times dt_out[s + e] in the forward, and zero past t (where cb may be unwritten).
vec4 decayed_cb(vec4 v, uint t, uint s) {
#ifdef BIDIR
    // Both scans' weights (the diagonal gets both); zero past the chunk, where cb is unwritten and the loads gave 0.
    [[unroll]] for (uint e = 0; e < 4; ++e) {
        const uint k = s + e;
        float w = 0.0;
        if (k <= t) {
            w = exp(min(dAq[t] - dAq[k], 0.0)) * dtq[k];
        }
        if (k >= t && k < span.len) {
            w += exp(min(dArq[t] - dArq[k], 0.0)) * dtrq[k];
        }
        v[e] *= w;
    }
    return v;
#endif
    // As vectors: the word's four decays and dts read together, not element by element (docs/PERF.md). Past t
    // selected, not multiplied: cb and the arrays may hold anything there.
    const vec4 w = exp(min(dAq[t] - vec4(dAq[s], dAq[s + 1], dAq[s + 2], dAq[s + 3]), vec4(0.0)))
        * (REVERSE == 0 ? vec4(dtq[s], dtq[s + 1], dtq[s + 2], dtq[s + 3]) : vec4(1.0));
    return mix(vec4(0.0), v * w, lessThanEqual(uvec4(s) + uvec4(0, 1, 2, 3), uvec4(t)));
}

#ifdef BIDIR
// The shift form's intra-chunk weights, from row t - 1 of cb (before) and row t + 1 (after).
vec4 shifted_cb(vec4 before, vec4 after, uint t, uint s) {
    vec4 v;
    [[unroll]] for (uint e = 0; e < 4; ++e) {
        const uint k = s + e;
        float w = 0.0;
        if (k + 1 <= t) {
            w = before[e] * exp(min(dAq[t - 1] - dAq[k], 0.0)) * dtq[k];
        }
        if (k >= t + 1 && k < span.len) {
            w += after[e] * exp(min(dArq[t + 1] - dArq[k], 0.0)) * dtrq[k];
        }
        v[e] = w;
    }
    return v;
}
#endif

// The shift form's offset of a state slice's rows of C, as g_at's code: the forward scan's row t - 1 (2), the
// reverse scan's t + 1 (1); 0 otherwise.
uint state_row_code() {
    return BIDIR_ON && SHIFT ? (revState ? 1u : 2u) : 0u;
}

// The slices' strided reads where they lie wholly inside memory; load_a and load_b fall back to bounded reads.
void set_slices() {
    if (!intra) {
        // C (REVERSE: B) at rows t0.., columns k0..; the states at rows p0.. of (p, n), columns k0..
        fastA = span_rows4(span, t0, BM, state_row_code(), b, p.seqlen, p.ngroups, grp, p.dstate, k0, BK, atA, stepA);
        fastB = wholeN && p0 + BN <= p.headdim && k0 + BK <= p.dstate;
        atB = int((((revState ? sbaseR : sbase) + p0) * p.dstate + k0) / 4);
        stepB = int(p.dstate / 4);
        return;
    }
    // cb rows t0.. from column k0 (REVERSE: rows k0.. from column t0), inside the Q x Q block
    const uint rows = REVERSE == 0 ? t0 : k0;
    const uint cols = REVERSE == 0 ? k0 : t0;
    // (BIDIR: cb's columns past the chunk's end are unwritten, so they are read only through the bounded path; with
    // SHIFT the rows before and after the tile's are read too.)
    const uint edge = BIDIR_ON && SHIFT ? 1u : 0u;
    fastA = wholeQ && rows >= edge && rows + (REVERSE == 0 ? BM : BK) + edge <= span.len
        && cols + (REVERSE == 0 ? BK : BM) <= (BIDIR_ON ? span.len : p.chunk);
    atA = int((cbase + rows * p.chunk + cols) / 4);
    stepA = int(p.chunk / 4);
    // x (REVERSE: g) at rows k0.., columns p0..
    fastB = span_rows4(span, k0, BK, REVERSE == 0 ? 0 : G_SHIFT, b, p.seqlen, p.nheads, head, p.headdim, p0, BN, atB, stepB);
}

// The state term: C (REVERSE: B) rows t0 + r, row-major (t, n), each times its decay, exp(dA_cs[t]) (REVERSE:
// exp(dA_cs[last] - dA_cs[s])). The intra-chunk term: rows of cb, forward row-major (t, s); REVERSE (s, t) stored
// column-major, a row of cb per t. load_a reads the word, finish_a applies decays and masks (BIDIR's shift form
// does both in load_a: it reads two rows of cb).
vec4 load_a(uint r, uint c) {
    if (!intra) {
        const uint s = t0 + r;
        if (!fastA && s >= span.len) {
            return vec4(0.0);
        }
        uint pos;
        const bool row = g_at(span_pos(span, s), state_row_code(), p.seqlen, pos);   // C's row, if inside the sequence
        return fastA ? TC_TWORD4(C4, atA, stepA, r, c)
            : row ? TC_TLOAD4(C, C4, ((b * p.seqlen + pos) * p.ngroups + grp) * p.dstate + k0 + c, k0 + c, p.dstate, wholeN) : vec4(0.0);
    }
    const uint t = REVERSE == 0 ? t0 + r : k0 + r;
    const uint s = REVERSE == 0 ? k0 + c : t0 + c;
#ifdef BIDIR
    if (SHIFT) {
        if (fastA) {
            return shifted_cb(TC_WORD4(cb4, atA - stepA, stepA, r, c), TC_WORD4(cb4, atA + stepA, stepA, r, c), t, s);
        }
        if (t >= span.len) {
            return vec4(0.0);
        }
        const vec4 before = t >= 1 ? TC_LOAD4(cb, cb4, cbase + (t - 1) * p.chunk + s, s, span.len, wholeQ) : vec4(0.0);
        const vec4 after = t + 1 < span.len ? TC_LOAD4(cb, cb4, cbase + (t + 1) * p.chunk + s, s, span.len, wholeQ) : vec4(0.0);
        return shifted_cb(before, after, t, s);
    }
#endif
    if (fastA) {
        return TC_WORD4(cb4, atA, stepA, r, c);
    }
    return t < span.len ? TC_LOAD4(cb, cb4, cbase + t * p.chunk + s, s, BIDIR_ON ? span.len : t + 1, wholeQ) : vec4(0.0);
}

vec4 finish_a(vec4 v, uint r, uint c) {
    if (!intra) {
        const uint s = t0 + r;
#ifdef TC_PIPELINED
        if (s >= span.len) {
            return vec4(0.0);   // (no decay stored there)
        }
        return v * (REVERSE == 0 ? exp(dAq[s]) : exp(min(dAq[span.len - 1] - dAq[s], 0.0)));
#else
        // From memory: the first slice publishes the per-chunk arrays only when it is staged.
#ifdef BIDIR
        if (revState) {
            return v * (!SHIFT ? exp(dA_rev[csr + span.len - 1 - s]) : s + 1 < span.len ? exp(dA_rev[csr + span.len - 2 - s]) : 1.0);
        }
        if (SHIFT) {
            return v * (s > 0 ? exp(dA_cs[cs + s - 1]) : 1.0);
        }
#endif
        const uint last = cs + span.len - 1;
        return v * (REVERSE == 0 ? exp(dA_cs[cs + s]) : exp(min(cs_diff(dA_cs[last], dA_cs_lo[last], dA_cs[cs + s], dA_cs_lo[cs + s]), 0.0)));
#endif
    }
#ifdef BIDIR
    if (SHIFT) {
        return v;
    }
#endif
    return decayed_cb(v, REVERSE == 0 ? t0 + r : k0 + r, REVERSE == 0 ? k0 + c : t0 + c);
}

vec4 load_b(uint r, uint c) {
#ifdef BIDIR
    if (!intra && revState) {   // R_next[p, n], as S_in below
        return fastB ? TC_WORD4(states_rev4, atB, stepB, r, c)
            : p0 + r < p.headdim ? TC_LOAD4(states_rev, states_rev4, (sbaseR + p0 + r) * p.dstate + k0 + c, k0 + c, p.dstate, wholeN) : vec4(0.0);
    }
#endif
    if (fastB) {
        return intra ? TC_TWORD4(x4, atB, stepB, r, c) : TC_WORD4(states4, atB, stepB, r, c);
    }
    if (!intra) {   // S_in[p, n] (REVERSE: dS_next) as the (n, p) operand: stored column-major, a row per p
        return p0 + r < p.headdim ? TC_LOAD4(states, states4, (sbase + p0 + r) * p.dstate + k0 + c, k0 + c, p.dstate, wholeN) : vec4(0.0);
    }
    const uint k = k0 + r;   // x[s, p] (REVERSE: g[t, p]), row-major
    uint pos;
    if (k < span.len && g_at(span_pos(span, k), REVERSE == 0 ? 0 : G_SHIFT, p.seqlen, pos)) {
        return TC_TLOAD4(x, x4, ((b * p.seqlen + pos) * p.nheads + head) * p.headdim + p0 + c, p0 + c, p.headdim, wholeP);
    }
    return vec4(0.0);
}

vec4 finish_b(vec4 v, uint r, uint c) {
    return v;
}

#ifndef TC_PIPELINED
vec4 word_a(uint r, uint c) {
    return finish_a(load_a(r, c), r, c);
}

vec4 word_b(uint r, uint c) {
    return load_b(r, c);
}
#endif

// The index of (position t of the walk, column pj) in this head's per-position tensors (x, z, y; REVERSE's g, dx).
uint at_tp(uint t, uint pj) {
    return ((b * p.seqlen + span_pos(span, t)) * p.nheads + head) * p.headdim + pj;
}

// Forward: skip connection and gate, y = (acc + D x) silu(z), and y before the gate when the backward needs it.
void tc_element(uint i, uint j, float v) {
    const uint t = t0 + i;
    const uint pj = p0 + j;
    if (REVERSE == 0 && t < span.len && pj < p.headdim) {
        const uint o = at_tp(t, pj);
        if (SSD_HAS(p.flags, SSD_D_ANY)) {
            v += D[SSD_HAS(p.flags, SSD_D_HEAD_DIM) ? head * p.headdim + pj : head] * TENSOR_LOAD(x, o);
        }
        if (GATED) {
            if (SSD_HAS(p.flags, SSD_SAVE_UNGATED)) {
                TENSOR_STORE(aux, o, v);
            }
            v *= silu(TENSOR_LOAD(z, o));
        }
        TENSOR_STORE(y, o, v);
    }
}

// Whether the quad at pj is whole: four elements inside the head dimension, at a word of its tensors.
bool quad_whole(uint pj) {
    return wholeP && pj + 4 <= p.headdim;
}

// The same for four neighbours of a row, as words where the row's four are whole: a quarter of the epilogue's memory
// accesses (with bf16 tensors, 8-byte ones where there were 2-byte ones).
void tc_quad(uint i, uint j, vec4 v) {
    const uint pj = p0 + j;
    if (REVERSE != 0 || t0 + i >= span.len || pj >= p.headdim) {
        return;
    }
    if (!quad_whole(pj)) {
        [[unroll]] for (uint k = 0; k < 4; ++k) {
            tc_element(i, j + k, v[k]);
        }
        return;
    }
    const uint o = at_tp(t0 + i, pj) / 4;   // headdim and pj are multiples of 4
    if (SSD_HAS(p.flags, SSD_D_ANY)) {
        const vec4 d = SSD_HAS(p.flags, SSD_D_HEAD_DIM)
            ? vec4(D[head * p.headdim + pj], D[head * p.headdim + pj + 1], D[head * p.headdim + pj + 2], D[head * p.headdim + pj + 3])
            : vec4(D[head]);
        v += d * TENSOR_LOAD4(x4, o);
    }
    if (GATED) {
        if (SSD_HAS(p.flags, SSD_SAVE_UNGATED)) {
            TENSOR_STORE4(aux4, o, v);
        }
        const vec4 g = TENSOR_LOAD4(z4, o);
        v *= vec4(silu(g.x), silu(g.y), silu(g.z), silu(g.w));
    }
    TENSOR_STORE4(y4, o, v);
}

// The forward's output straight between the accumulators and memory where nothing is applied element by element: no
// gate, D absent or one per head, fp32 tensors, the tile wholly inside the chunk and the head dimension, its rows at
// ascending positions (not a mirrored walk) and on 16-byte boundaries (a fragment's rows must be). The accumulators
// then start as D x and are stored as y, without the epilogue's trip through shared memory (docs/PERF.md). With f16
// operands only: with bf16 ones the kernel was measured slower with it. No barrier after it: the next item writes
// shared memory only after one (the barrier after its per-chunk arrays, TC_FETCHED, before the slice maxima).
#if !defined(TENSORS_BF16) && !defined(OPERAND_BF16)
#define DIRECT_OUT
#endif
bool direct_out() {
#ifndef DIRECT_OUT
    return false;
#else
    return REVERSE == 0 && !BIDIR_ON && !GATED && !span.mirror && wholeP && t0 + BM <= span.len && p0 + BN <= p.headdim
        && !SSD_HAS(p.flags, SSD_D_HEAD_DIM);
#endif
}

void direct_begin(out TC_ACC acc[TC_FRAGS]) {
    tc_zero(acc);
#ifdef DIRECT_OUT
    if (SSD_HAS(p.flags, SSD_D_ANY)) {
        const uint ld = p.nheads * p.headdim;
        const uint at = at_tp(t0, p0) + (gl_SubgroupID / TC_WARPS_N) * WM * ld + (gl_SubgroupID % TC_WARPS_N) * WN;
        const float d = D[head];
        [[unroll]] for (uint i = 0; i < TC_FRAGS_M; ++i) {
            [[unroll]] for (uint j = 0; j < TC_FRAGS_N; ++j) {
                coopMatLoad(acc[i * TC_FRAGS_N + j], x, at + i * TM * ld + j * TN, ld, gl_CooperativeMatrixLayoutRowMajor);
                acc[i * TC_FRAGS_N + j] = acc[i * TC_FRAGS_N + j] * d;
            }
        }
    }
#endif
}

void direct_end(TC_ACC acc[TC_FRAGS]) {
#ifdef DIRECT_OUT
    TC_STORE_DIRECT(acc, y, at_tp(t0, p0), p.nheads * p.headdim);
#endif
}

// Rows of the tile inside the chunk, for the ddt parts (tc_row_dots_done).
bool tc_row_partner(uint i, out uint base) {
    base = 0;
    return t0 + i < span.len;
}

void tc_row_dot(uint i, float dot) {
    ddt_part[(cs + t0 + i) * tilesP + tileP] = dot;
}

// REVERSE's epilogue, a fragment at a time through each subgroup's staging area (tc_frag_*): dx = dt_out r + D g (D
// only for an unshifted g: the host never folds D into a shifted run; with ACCUMULATE plus what dx holds), and the
// ddt parts, x . r per row. Lane l owns quads (four row neighbours) l, l + SG, ... of every fragment, read and
// written as words where a row's four are whole (as the forward's tc_quad); its reads of memory for a fragment (g
// for D, dx's old value, the forward's x) are issued before the previous fragment's row dots (the first fragment's
// before the barrier that starts the epilogue), one fragment at a time: holding every fragment's values at once cost
// dx registers (docs/PERF.md). (The forward keeps tc_epilogue: there the values held across cost it workgroups an SM.)
const uint EP_SG = TC_THREADS / TC_SUBGROUPS;   // the subgroup size the host sized the workgroup with
const uint EP_QUADS = TM * TN / 4;              // a fragment's quads
const uint EP_PER = (EP_QUADS + EP_SG - 1) / EP_SG;   // a lane's quads of a fragment (past EP_QUADS: none)
const uint EP_ROWQ = TN / 4;                    // quads a fragment row
const uint EP_LANES = EP_SG < EP_QUADS ? EP_SG : EP_QUADS;   // the lanes that own quads
// dD's column sums a lane keeps (SSD_DD_PARTS), a vec4 per fragment column: 4 EP_SG is a multiple of TN (powers of
// two, EP_SG >= TN / 4), so every quad a lane owns lies in the same four columns of its fragment, 4 (lane % EP_ROWQ)
// on.

// Whether dx adds D g (only for an unshifted g, above).
bool dx_has_d() {
    return G_SHIFT == 0 && SSD_HAS(p.flags, SSD_D_ANY);
}

bool dd_parts() {
    return REVERSE != 0 && !BIDIR_ON && G_SHIFT == 0 && SSD_HAS(p.flags, SSD_DD_PARTS);
}

// This tile's row of dD parts for subgroup row block `block`.
uint dd_row(uint block) {
    return ((b * p.nchunks + chunkIdx) * tilesT + tileT) * (BM / WM) + block;
}

void dd_store(uint row, uint pj, float v) {
#ifndef BIDIR
    if (pj < p.headdim) {
        dd_part[(row * p.nheads + head) * p.headdim + pj] = v;
    }
#endif
}

// Whether the lane's quad q of the fragment at (row0, col0) of the tile exists and lies inside the problem: its
// position t, head-dimension index pj and index o in the per-position tensors.
bool dx_quad(uint lane, uint q, uint row0, uint col0, out uint t, out uint pj, out uint o) {
    const uint e = 4 * (lane + q * EP_SG);
    t = t0 + row0 + e / TN;
    pj = p0 + col0 + e % TN;
    o = 0;
    if (e >= TM * TN || t >= span.len || pj >= p.headdim) {
        return false;
    }
    o = at_tp(t, pj);
    return true;
}

// Lane `lane`'s reads for fragment f of subgroup block (wm0, wn0): g where D g is added (and dD summed), dx's old
// value (ACCUMULATE), and the forward's x; 0 outside the problem. Only stored here: their first use waits for them,
// and it comes after the fragment before is done.
void dx_epilogue_load(uint f, uint lane, uint wm0, uint wn0, out vec4 gq[EP_PER], out vec4 old[EP_PER], out vec4 xf[EP_PER]) {
    const bool hasD = dx_has_d();
    const uint row0 = wm0 + (f / TC_FRAGS_N) * TM;
    const uint col0 = wn0 + (f % TC_FRAGS_N) * TN;
    [[unroll]] for (uint q = 0; q < EP_PER; ++q) {
        gq[q] = vec4(0.0);
        old[q] = vec4(0.0);
        xf[q] = vec4(0.0);
        uint t, pj, o;
        if (!dx_quad(lane, q, row0, col0, t, pj, o)) {
            continue;
        }
        if (quad_whole(pj)) {
            if (hasD) {
                gq[q] = TENSOR_LOAD4(x4, o / 4);
            }
            if (ACCUMULATE) {
                old[q] = TENSOR_LOAD4(y4, o / 4);
            }
            xf[q] = TENSOR_LOAD4(z4, o / 4);
        } else {
            [[unroll]] for (uint k = 0; k < 4; ++k) {
                if (pj + k < p.headdim) {
                    if (hasD) {
                        gq[q][k] = TENSOR_LOAD(g_in, o + k);
                    }
                    if (ACCUMULATE) {
                        old[q][k] = TENSOR_LOAD(dx, o + k);
                    }
                    xf[q][k] = TENSOR_LOAD(x_fwd, o + k);
                }
            }
        }
    }
}

// The subgroup's dD parts: the column sums of the lanes that own quads, those that share columns summed in lane
// order through the subgroup's staging area (4 EP_LANES <= TM TN: it holds them).
void dd_epilogue(vec4 dd[TC_FRAGS_N], uint lane, uint wm0, uint wn0, uint at) {
    const uint row = dd_row(wm0 / WM);
    [[unroll]] for (uint j = 0; j < TC_FRAGS_N; ++j) {
        if (lane < EP_LANES) {
            [[unroll]] for (uint k = 0; k < 4; ++k) {
                tc_frag_set(at + 4 * lane + k, dd[j][k]);
            }
        }
        subgroupMemoryBarrierShared();
        subgroupBarrier();
        for (uint c = lane; c < TN; c += EP_SG) {
            float v = 0.0;
            for (uint k = 0; k < EP_LANES / EP_ROWQ; ++k) {
                v += tc_frag_get(at + 4 * (k * EP_ROWQ + c / 4) + c % 4);
            }
            dd_store(row, p0 + wn0 + j * TN + c, v);
        }
        subgroupMemoryBarrierShared();
        subgroupBarrier();
    }
}

// A tile wholly past the sequence's end: its dD parts are zero.
void dd_zero_tile() {
    for (uint e = gl_LocalInvocationID.x; e < (BM / WM) * BN; e += TC_THREADS) {
        dd_store(dd_row(e / BN), p0 + e % BN, 0.0);
    }
}

void dx_epilogue(TC_ACC acc[TC_FRAGS]) {
    const uint lane = gl_SubgroupInvocationID;
    const uint wm0 = (gl_SubgroupID / TC_WARPS_N) * WM;
    const uint wn0 = (gl_SubgroupID % TC_WARPS_N) * WN;
    const uint at = gl_SubgroupID * TM * TN;
    vec4 gq[EP_PER];
    vec4 old[EP_PER];
    vec4 xf[EP_PER];
    vec4 dd[TC_FRAGS_N];
    [[unroll]] for (uint j = 0; j < TC_FRAGS_N; ++j) {
        dd[j] = vec4(0.0);
    }
    // D where dx adds D g: one per head (held), or per head-dimension index (read with each quad; 0 past it).
    const bool hasD = dx_has_d();
    const bool dPerP = SSD_HAS(p.flags, SSD_D_HEAD_DIM);
    const float dHead = hasD && !dPerP ? D[head] : 0.0;
    dx_epilogue_load(0, lane, wm0, wn0, gq, old, xf);
    tc_frags_begin();
    [[unroll]] for (uint f = 0; f < TC_FRAGS; ++f) {
        const uint row0 = wm0 + (f / TC_FRAGS_N) * TM;
        const uint col0 = wn0 + (f % TC_FRAGS_N) * TN;
        tc_frag_store(acc[f], at);
        subgroupMemoryBarrierShared();
        subgroupBarrier();
        [[unroll]] for (uint q = 0; q < EP_PER; ++q) {
            const uint e = 4 * (lane + q * EP_SG);
            if (e >= TM * TN) {
                continue;   // uniform for EP_PER = 1, else only past a fragment smaller than the subgroup's quads
            }
            const vec4 v = tc_frag_get4(at + e);
            uint t, pj, o;
            if (dx_quad(lane, q, row0, col0, t, pj, o)) {
                vec4 d = vec4(dHead);
                if (hasD && dPerP) {
                    [[unroll]] for (uint k = 0; k < 4; ++k) {
                        d[k] = pj + k < p.headdim ? D[head * p.headdim + pj + k] : 0.0;
                    }
                }
                const vec4 dg = d * gq[q];
                const vec4 r = dtq[t] * v + (ACCUMULATE ? dg + old[q] : dg);
                if (quad_whole(pj)) {
                    TENSOR_STORE4(y4, o / 4, r);
                } else {
                    [[unroll]] for (uint k = 0; k < 4; ++k) {
                        if (pj + k < p.headdim) {
                            TENSOR_STORE(dx, o + k, r[k]);
                        }
                    }
                }
            }
            // This quad's shares of x . r (0 outside).
            const vec4 xr = v * xf[q];
            [[unroll]] for (uint k = 0; k < 4; ++k) {
                tc_frag_set(at + e + k, xr[k]);
            }
            if (dd_parts()) {
                dd[f % TC_FRAGS_N] += gq[q] * xf[q];
            }
        }
        if (f + 1 < TC_FRAGS) {
            dx_epilogue_load(f + 1, lane, wm0, wn0, gq, old, xf);
        }
        subgroupMemoryBarrierShared();
        subgroupBarrier();
        // Each row's products summed over the fragment's columns in a fixed order, each lane from its own column
        // (rows TN apart share a bank when read together).
        for (uint r = lane; r < TM; r += EP_SG) {
            float dot = 0.0;
            [[unroll]] for (uint c0 = 0; c0 < TN; ++c0) {
                dot += tc_frag_get(at + r * TN + (c0 + r) % TN);
            }
            tc_row_parts[(row0 + r) * (BN / TN) + col0 / TN] = dot;
        }
        subgroupMemoryBarrierShared();
        subgroupBarrier();
    }
    if (dd_parts()) {
        dd_epilogue(dd, lane, wm0, wn0, at);
    }
}

// Slice k of the current term.
void tc_slice(uint k) {
    k0 = k;
    set_slices();
}

void main() {
    tilesT = (p.chunk + BM - 1) / BM;
    tilesP = (p.headdim + BN - 1) / BN;
    const uint items = tilesT * tilesP * p.nchunks * p.batch * p.nheads;
    const uint hpg = p.nheads / p.ngroups;

    for (uint w = gl_WorkGroupID.x; w < items; w += gl_NumWorkGroups.x) {
        uint r = w;
        tileP = r % tilesP; r /= tilesP;
        tileT = r % tilesT; r /= tilesT;
        chunkIdx = r % p.nchunks; r /= p.nchunks;
        head = r % p.nheads;
        b = r / p.nheads;
        grp = head / hpg;
        wholeP = p.headdim % 4 == 0;
        wholeN = p.dstate % 4 == 0;
        wholeQ = p.chunk % 4 == 0;
        span = chunk_span(chunkIdx, p.chunk, p.nchunks, p.seqlen, SSD_HAS(p.flags, SSD_MIRRORED));
        t0 = tileT * BM;
        p0 = tileP * BN;
        if (t0 >= span.len) {
            if (dd_parts()) {
                dd_zero_tile();
            }
            continue;   // uniform: a tile wholly past the sequence end
        }
        cbase = ((b * p.nchunks + chunkIdx) * p.ngroups + grp) * p.chunk * p.chunk;
        sbase = ((b * p.nchunks + chunkIdx) * p.nheads + head) * p.headdim;

        cs = ((b * p.nheads + head) * p.nchunks + chunkIdx) * p.chunk;
        csr = ((b * p.nheads + head) * p.nchunks + p.nchunks - 1 - chunkIdx) * p.chunk;
        sbaseR = ((b * p.nchunks + p.nchunks - 1 - chunkIdx) * p.nheads + head) * p.headdim;
        // The other side's positions this tile reads: forward s <= t < min(t0 + BM, len) (BIDIR: the whole chunk);
        // REVERSE t >= s, up to len.
        const uint kBegin = REVERSE == 0 ? 0 : t0 / BK * BK;
        const uint kEnd = REVERSE == 0 && !BIDIR_ON ? min(t0 + BM, span.len) : span.len;
        load_prologue(kEnd);

        TC_ACC acc[TC_FRAGS];
        const bool direct = direct_out();   // uniform
        if (direct) {
            direct_begin(acc);
        } else {
            tc_zero(acc);
        }
        // No state term where it is zero: the state entering the walk's first chunk without initial states;
        // REVERSE, the gradient leaving its last chunk without a final-state gradient. BIDIR: the reverse state
        // entering the last chunk from the right.
        const bool noState = REVERSE == 0 ? chunkIdx == 0 && !SSD_HAS(p.flags, SSD_INITIAL_STATES)
                                          : chunkIdx + 1 == p.nchunks && !SSD_HAS(p.flags, SSD_D_FINAL_STATES);
        const bool noRevState = !BIDIR_ON || chunkIdx + 1 == p.nchunks;
#ifndef TC_PIPELINED
        if (noState && noRevState) {   // the intra-chunk slices' words read the arrays as they are loaded
            store_prologue();
            barrier();
        }
#endif
        intra = false;
        revState = false;
        tc_run(acc, 0, noState ? 0 : p.dstate, false, true);
        revState = true;
        tc_run(acc, 0, noRevState ? 0 : p.dstate, false, true);
        revState = false;
        intra = true;
        tc_run(acc, kBegin, kEnd, REVERSE != 0, false);
        if (direct) {
            direct_end(acc);
        } else if (REVERSE == 0) {
            tc_epilogue(acc);
        } else {
            dx_epilogue(acc);   // and each fragment's row dots
            tc_row_dots_done();
        }
    }
}
