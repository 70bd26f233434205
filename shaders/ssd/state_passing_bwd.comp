#version 450
// SSD backward, state_passing_bwd: the reverse walk over chunks for every (batch, head, state element).
// dstates holds each chunk's local gradient sum_{t in c} exp(dA_cs[t]) g[t] C[t]^T on entry (chunk_state, GRAD);
// walking c = last..0 with r = d final_state (or 0):
//   dstates[c] <- r                     the gradient of the state leaving chunk c (what dx and dB read)
//   inner_part[c]   = S_in(c) . r         S_in(c) = the state entering chunk c (saved by the forward)
//   r <- dstates_local[c] + exp(dA_cs[c][last]) r
// and dinitial_states = r at the end (the only use of chunk 0's local gradient: first_chunk_state_grad_unused).
// exp(dA_cs[c][last]) inner is the decay's share of the dA_cs gradient (chunk_cumsum_bwd); inner_part is summed
// over this workgroup's slice of the p x n elements (fixed-order tree).
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"
#include "ssd_common.glsl"

layout(local_size_x_id = 0) in;   // a power of two

layout(std430, binding = 0) buffer DStates { float dstates[]; };
layout(std430, binding = 1) readonly buffer States { float states[]; };        // entering each chunk (forward)
layout(std430, binding = 2) readonly buffer DaCs { float dA_cs[]; };
layout(std430, binding = 3) readonly buffer DFinal { float dfinal[]; };
layout(std430, binding = 4) writeonly buffer DInitial { float dinitial[]; };
layout(std430, binding = 5) writeonly buffer InnerPart { float inner_part[]; };   // (b, h, slices, nchunks)

layout(push_constant) uniform Push {
    uint batch, seqlen, nheads, headdim, dstate, chunk, nchunks;
    uint flags;   // SsdFlags (ssd_flags.glsl)
} p;

// Chunks in groups of CG, as state_passing: a group's loads are issued before the chain of updates (a store to
// dstates may alias a later load as far as the compiler knows), and its CG inner products share one tree.
const uint CG = gl_WorkGroupSize.x <= 512 ? 8 : 4;   // red stays within 16 KiB, every device's minimum
shared float red[CG * gl_WorkGroupSize.x];

void main() {
    const uint W = gl_WorkGroupSize.x;
    const uint tid = gl_LocalInvocationID.x;
    const uint pn = p.headdim * p.dstate;
    const uint slices = (pn + W - 1) / W;
    const uint items = p.batch * p.nheads * slices;
    for (uint w = gl_WorkGroupID.x; w < items; w += gl_NumWorkGroups.x) {
        const uint slice = w % slices;
        const uint bh = w / slices;
        const uint head = bh % p.nheads;
        const uint b = bh / p.nheads;
        const uint k = slice * W + tid;
        const bool valid = k < pn;
        float r = valid && SSD_HAS(p.flags, SSD_D_FINAL_STATES) ? dfinal[bh * pn + k] : 0.0;
        for (uint top = p.nchunks; top > 0; top -= min(CG, top)) {
            const uint count = min(CG, top);   // chunks top-1 down to top-count
            float own[CG];
            float st[CG];
            float decay[CG];
            [[unroll]] for (uint i = 0; i < CG; ++i) {
                own[i] = 0.0;
                st[i] = 0.0;
                decay[i] = 0.0;
                if (i < count) {
                    const uint c = top - 1 - i;
                    const uint idx = ((b * p.nchunks + c) * p.nheads + head) * pn + k;
                    if (valid) {
                        own[i] = first_chunk_state_grad_unused(c, p.flags) ? 0.0 : dstates[idx];   // unwritten then
                        st[i] = states[idx];
                    }
                    const uint len = chunk_span(c, p.chunk, p.nchunks, p.seqlen, SSD_HAS(p.flags, SSD_MIRRORED)).len;
                    decay[i] = dA_cs[(bh * p.nchunks + c) * p.chunk + len - 1];
                }
            }
            [[unroll]] for (uint i = 0; i < CG; ++i) {
                if (i < count) {
                    if (valid) {
                        dstates[((b * p.nchunks + top - 1 - i) * p.nheads + head) * pn + k] = r;
                    }
                    red[i * W + tid] = st[i] * r;
                    r = own[i] + exp(decay[i]) * r;
                }
            }
            barrier();
            for (uint half_ = W / 2; half_ > 0; half_ >>= 1) {
                if (tid < half_) {
                    for (uint i = 0; i < count; ++i) {
                        red[i * W + tid] += red[i * W + tid + half_];
                    }
                }
                barrier();
            }
            if (tid < count) {
                inner_part[(bh * slices + slice) * p.nchunks + top - 1 - tid] = red[tid * W];
            }
            barrier();
        }
        if (valid && SSD_HAS(p.flags, SSD_D_INITIAL_STATES)) {
            dinitial[bh * pn + k] = r;
        }
    }
}
