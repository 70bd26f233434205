#version 450
// chunk_state on tensor cores (the math of ssd/chunk_state.comp): per (batch, chunk, head) the (p x Q)(Q x n)
// product states[b, c, h, p, n] = sum_s w[s] x[s, p] B[s, n], with w[s] = exp(dA_cs[last] - dA_cs[s]) dt_out[s]
// (GRAD = 1: the backward's dstates = sum_t exp(dA_cs[t]) g[t, p] C[t, n], x <- g, B <- C). The weights are
// computed once per chunk in fp32 and folded into x as it is staged. One workgroup per BM x BN tile of (p, n).
//
// PASSING does state_passing's walk too (GRAD: state_passing_bwd's), as a decoupled look-back: items are taken in
// ticket order (an atomic counter), chunk-major in the walk's order, so the item of the chunk before in the walk for
// the same tile was taken first and is running or done. Each item computes its chunk's own product (forward: S_c;
// GRAD: the local gradient L_c), waits for the item before to publish what enters its chunk in states[c], and
// publishes what leaves it, decay times what entered plus its own, with decay = exp(dA_cs[c][last]):
//   forward, c = 0 .. nc-1:  states[c] = S_in(c) (S_in(0): the initial state or 0, stored by chunk 0's item);
//                            S_in(c + 1) = decay S_in(c) + S_c into states[c + 1], the last chunk's into final_states
//   GRAD, c = nc-1 .. 0:     states[c] = r_c, the gradient of the state leaving chunk c (the last chunk's: d final
//                            states or 0, stored by its item); r_{c-1} = decay r_c + L_c into states[c - 1], chunk
//                            0's into d initial_states (only when asked: without, chunk 0's product is skipped)
//                            and inner_part[b, h, tile, c] = S_in(c) . r_c over the tile (S_in: the forward's states)
// The states make one trip: no local states in memory, no separate walk over them.
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
layout(constant_id = 11) const bool PASSING = false;   // state_passing's walk too (GRAD: state_passing_bwd's), above

#include "tensor_elems.glsl"
layout(std430, binding = 0) readonly buffer X { TENSOR_ELEM x[]; };
layout(std430, binding = 1) readonly buffer Bm { TENSOR_ELEM B[]; };
layout(std430, binding = 2) readonly buffer DtOut { float dt_out[]; };
layout(std430, binding = 3) readonly buffer DaCs { float dA_cs[]; };
layout(std430, binding = 4) writeonly buffer States { float states[]; };
layout(std430, binding = 5) readonly buffer DaCsLo { float dA_cs_lo[]; };
layout(std430, binding = 0) readonly buffer X4 { TENSOR_WORD4 x4[]; };
layout(std430, binding = 1) readonly buffer Bm4 { TENSOR_WORD4 B4[]; };
// PASSING: what enters each chunk, read by the item after in the walk (coherent: another workgroup wrote it); what
// enters the walk's first chunk (initial states; GRAD: d final states) and leaves its last (final states; GRAD: d
// initial states); the ticket counter, then one flag per item (zero before the dispatch); GRAD: the forward's states
// entering each chunk and the inner parts.
layout(std430, binding = 4) coherent buffer StatesIn { float states_in[]; };
layout(std430, binding = 6) readonly buffer WalkIn { float walk_in[]; };
layout(std430, binding = 7) writeonly buffer WalkOut { float walk_out[]; };
layout(std430, binding = 8) coherent buffer Sync { uint sync[]; };
layout(std430, binding = 9) readonly buffer Entering { float entering_states[]; };
layout(std430, binding = 10) writeonly buffer InnerPart { float inner_part[]; };

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

uint c;
bool walkFirst, walkLast;   // PASSING: this chunk is the walk's first (nothing to wait for), its last (walk_out)
uint outBase;    // PASSING: where the chunk's leaving value goes in states (chunk c + 1; GRAD: c - 1)
float decay;     // PASSING: exp(dA_cs[c][last])
float innerSum;  // GRAD with PASSING: this invocation's share of S_in(c) . r_c

// PASSING: element (pi, nj): what entered the chunk (the walk's first: from walk_in or 0, stored in states too),
// then what leaves it. GRAD: its share of the inner product.
void pass_element(uint pi, uint nj, float v) {
    const uint at = (base + pi) * p.dstate + nj;
    const uint whole = ((b * p.nheads + head) * p.headdim + pi) * p.dstate + nj;   // (b, h, p, n)
    float entered;
    if (walkFirst) {
        entered = SSD_HAS(p.flags, GRAD == 0 ? SSD_INITIAL_STATES : SSD_D_FINAL_STATES) ? walk_in[whole] : 0.0;
        states_in[at] = entered;
    } else {
        entered = states_in[at];
    }
    if (GRAD != 0) {
        innerSum += entering_states[at] * entered;
    }
    const float leaving = decay * entered + v;
    if (!walkLast) {
        states_in[(outBase + pi) * p.dstate + nj] = leaving;
    } else if (GRAD == 0 || SSD_HAS(p.flags, SSD_D_INITIAL_STATES)) {
        walk_out[whole] = leaving;
    }
}

void tc_element(uint i, uint j, float v) {
    if (p0 + i < p.headdim && n0 + j < p.dstate) {
        if (PASSING) {
            pass_element(p0 + i, n0 + j, v);
        } else {
            states[(base + p0 + i) * p.dstate + n0 + j] = v;
        }
    }
}

shared uint ticket;

// PASSING: the next item in ticket order (every invocation calls it).
uint next_ticket() {
    barrier();   // every invocation has read the last ticket
    if (gl_LocalInvocationID.x == 0) {
        ticket = atomicAdd(sync[0], 1u);
    }
    barrier();
    return ticket;
}

// PASSING: wait until item `item` has published (one invocation spins), then see what it wrote.
void wait_for(uint item) {
    if (gl_LocalInvocationID.x == 0) {
        while (atomicLoad(sync[1 + item], gl_ScopeQueueFamily, gl_StorageSemanticsBuffer, gl_SemanticsAcquire | gl_SemanticsMakeVisible) == 0u) {
        }
    }
    controlBarrier(gl_ScopeWorkgroup, gl_ScopeQueueFamily, gl_StorageSemanticsBuffer, gl_SemanticsAcquireRelease | gl_SemanticsMakeAvailable | gl_SemanticsMakeVisible);
}

// PASSING: make the workgroup's stores of what leaves its chunk visible, then mark item `item` published.
void publish(uint item) {
    controlBarrier(gl_ScopeWorkgroup, gl_ScopeQueueFamily, gl_StorageSemanticsBuffer, gl_SemanticsAcquireRelease | gl_SemanticsMakeAvailable | gl_SemanticsMakeVisible);
    if (gl_LocalInvocationID.x == 0) {
        atomicStore(sync[1 + item], 1u, gl_ScopeQueueFamily, gl_StorageSemanticsBuffer, gl_SemanticsRelease | gl_SemanticsMakeAvailable);
    }
}

void main() {
    const uint tid = gl_LocalInvocationID.x;
    const uint tilesP = (p.headdim + BM - 1) / BM;
    const uint tilesN = (p.dstate + BN - 1) / BN;
    const uint items = tilesP * tilesN * p.nchunks * p.batch * p.nheads;
    const uint hpg = p.nheads / p.ngroups;

    const uint perChunk = tilesP * tilesN * p.batch * p.nheads;   // PASSING: items a chunk, chunk-major
    for (uint w = PASSING ? next_ticket() : gl_WorkGroupID.x; w < items; w = PASSING ? next_ticket() : w + gl_NumWorkGroups.x) {
        uint r = w;
        const uint tn = r % tilesN; r /= tilesN;
        const uint tp = r % tilesP; r /= tilesP;
        if (PASSING) {
            const uint k = r / (p.batch * p.nheads);   // the walk's k-th chunk
            c = GRAD == 0 ? k : p.nchunks - 1 - k;
            r %= p.batch * p.nheads;
        } else {
            c = r % p.nchunks; r /= p.nchunks;
        }
        const bool noProduct = GRAD != 0 && first_chunk_state_grad_unused(c, p.flags);
        if (noProduct && !PASSING) {
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

        TC_ACC acc[TC_FRAGS];
        tc_zero(acc);
        if (!noProduct) {
            barrier();   // the previous item's slices have read the weights
            for (uint s = tid; s < span.len; s += TC_THREADS) {
                weight[s] = GRAD == 0 ? exp(min(cs_diff(last, last_lo, dA_cs[cs + s], dA_cs_lo[cs + s]), 0.0)) * dt_out[cs + s]
                                      : exp(min(dA_cs[cs + s], 0.0));
            }
            barrier();
            for (s0 = 0; s0 < span.len; s0 += BK) {
                fastA = span_rows4(span, s0, BK, GRAD == 0 ? 0 : G_SHIFT, b, p.seqlen, p.nheads, head, p.headdim, p0, BM, atA, stepA);
                fastB = span_rows4(span, s0, BK, 0, b, p.seqlen, p.ngroups, grp, p.dstate, n0, BN, atB, stepB);
                tc_product(acc, true, false);
            }
        }
        base = ((b * p.nchunks + c) * p.nheads + head) * p.headdim;
        if (!PASSING) {
            if (p0 + BM <= p.headdim && n0 + BN <= p.dstate) {
                TC_STORE_DIRECT(acc, states, (base + p0) * p.dstate + n0, p.dstate);
            } else {
                tc_epilogue(acc);
            }
            continue;
        }

        walkFirst = GRAD == 0 ? c == 0 : c + 1 == p.nchunks;
        walkLast = GRAD == 0 ? c + 1 == p.nchunks : c == 0;
        outBase = ((b * p.nchunks + (GRAD == 0 ? c + 1 : c - 1)) * p.nheads + head) * p.headdim;
        decay = exp(last);   // state_passing's factor: the cumsum's fp32 part
        innerSum = 0.0;
        if (!walkFirst) {
            wait_for(w - perChunk);
        }
        if (!walkFirst && !walkLast && p0 + BM <= p.headdim && n0 + BN <= p.dstate) {
            // decay times what entered plus the chunk's own, fragment by fragment between memory and the accumulators
            const uint wm0 = (gl_SubgroupID / TC_WARPS_N) * WM;
            const uint wn0 = (gl_SubgroupID % TC_WARPS_N) * WN;
            [[unroll]] for (uint i = 0; i < TC_FRAGS_M; ++i) {
                [[unroll]] for (uint j = 0; j < TC_FRAGS_N; ++j) {
                    const uint at = (p0 + wm0 + i * TM) * p.dstate + n0 + wn0 + j * TN;
                    TC_ACC entered;
                    coopMatLoad(entered, states_in, base * p.dstate + at, p.dstate, gl_CooperativeMatrixLayoutRowMajor);
                    if (GRAD != 0) {
                        // Both fragments hold the same elements in each lane, so their products sum to the tile's dot.
                        TC_ACC saved;
                        coopMatLoad(saved, entering_states, base * p.dstate + at, p.dstate, gl_CooperativeMatrixLayoutRowMajor);
                        for (int e = 0; e < entered.length(); ++e) {
                            innerSum += saved[e] * entered[e];
                        }
                    }
                    acc[i * TC_FRAGS_N + j] += entered * decay;
                    coopMatStore(acc[i * TC_FRAGS_N + j], states_in, outBase * p.dstate + at, p.dstate, gl_CooperativeMatrixLayoutRowMajor);
                }
            }
        } else {
            tc_epilogue(acc);   // the walk's first and last chunks, edge tiles: element by element (pass_element)
        }
        if (GRAD != 0) {
            // The tile's inner part: each subgroup's sum, then the subgroups' in order.
            innerSum = subgroupAdd(innerSum);
            if (subgroupElect()) {
                tc_max[gl_SubgroupID] = innerSum;
            }
            barrier();
            if (tid == 0) {
                float dot = 0.0;
                for (uint g = 0; g < TC_SUBGROUPS; ++g) {
                    dot += tc_max[g];
                }
                inner_part[((b * p.nheads + head) * tilesP * tilesN + tp * tilesN + tn) * p.nchunks + c] = dot;
            }
        }
        publish(w);
    }
}
