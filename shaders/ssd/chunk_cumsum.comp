#version 450
// SSD stage 1, chunk_cumsum: for one (batch, head, chunk), dt_out = clamp(softplus(dt + dt_bias)) (softplus and
// bias optional, the clamp always applied as in mamba_ssm, default limits (0, inf)) and dA_cs = the inclusive
// cumulative sum of dt_out * A within the chunk, as a compensated (hi, lo) pair (see cs_diff). Positions past the sequence end get dt_out = 0, so dA_cs stays
// flat there. One workgroup per (chunk, batch*head), walked with a stride; an in-shared Hillis-Steele scan.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "ssd_common.glsl"

layout(local_size_x_id = 0) in;   // >= Q, a power of two

layout(std430, binding = 0) readonly buffer Dt { float dt[]; };
layout(std430, binding = 1) readonly buffer AVec { float A[]; };
layout(std430, binding = 2) readonly buffer DtBias { float dt_bias[]; };
layout(std430, binding = 3) writeonly buffer DtOut { float dt_out[]; };
layout(std430, binding = 4) writeonly buffer DaCs { float dA_cs[]; };
layout(std430, binding = 5) writeonly buffer DaCsLo { float dA_cs_lo[]; };

layout(push_constant) uniform Push {
    uint batch, seqlen, nheads, chunk, nchunks;
    uint flags;            // SsdFlags (ssd_flags.glsl)
    float dt_min, dt_max;
} p;

shared float scan[gl_WorkGroupSize.x];
shared float scan_lo[gl_WorkGroupSize.x];

void main() {
    const uint t = gl_LocalInvocationID.x;
    const uint items = p.nchunks * p.batch * p.nheads;
    for (uint w = gl_WorkGroupID.x; w < items; w += gl_NumWorkGroups.x) {
        const uint c = w % p.nchunks;
        const uint bh = w / p.nchunks;          // batch * nheads + head
        const uint head = bh % p.nheads;
        const uint b = bh / p.nheads;
        const ChunkSpan span = chunk_span(c, p.chunk, p.nchunks, p.seqlen, SSD_HAS(p.flags, SSD_MIRRORED));

        float v = 0.0;
        if (t < span.len) {
            v = dt[(b * p.seqlen + span_pos(span, t)) * p.nheads + head];
            if (SSD_HAS(p.flags, SSD_DT_BIAS)) {
                v += dt_bias[head];
            }
            if (SSD_HAS(p.flags, SSD_DT_SOFTPLUS)) {
                v = softplus_precise(v);
            }
            v = min(max(v, p.dt_min), p.dt_max);
        }
        const float a = A[head];
        scan[t] = v * a;
        scan_lo[t] = fma(v, a, -(v * a));   // the product's rounding error, exactly
        barrier();
        for (uint off = 1u; off < gl_WorkGroupSize.x; off <<= 1u) {
            const float add = t >= off ? scan[t - off] : 0.0;
            const float add_lo = t >= off ? scan_lo[t - off] : 0.0;
            barrier();
            // Two-sum of the high parts; its error joins the low parts, then renormalize.
            precise float hi = scan[t];
            precise float s = hi + add;
            precise float bp = s - hi;
            precise float err = (hi - (s - bp)) + (add - bp);
            precise float lo = scan_lo[t] + add_lo + err;
            precise float nh = s + lo;
            scan[t] = nh;
            scan_lo[t] = lo - (nh - s);
            barrier();
        }
        if (t < p.chunk) {
            const uint o = (bh * p.nchunks + c) * p.chunk + t;
            dt_out[o] = v;
            dA_cs[o] = scan[t];
            dA_cs_lo[o] = scan_lo[t];
        }
        barrier();
    }
}
