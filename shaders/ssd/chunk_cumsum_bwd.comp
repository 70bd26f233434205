#version 450
// SSD backward, last step for dt and A: for one (batch, head, chunk),
//   dAcs[t]  = gy[t] - dt_out[t] ddt_direct[t] + (t == last ? sum of ddA_last_part : 0)   gradient of dA_cs[t]
//   ddA[k]   = sum_{t >= k in chunk} dAcs[t]                                               (dA_cs is a cumsum of dt A)
//   ddt_out  = ddt_direct + A ddA ;  dA_part = sum_k dt_out[k] ddA[k]
//   ddt      = ddt_out through the clamp (zero where it clipped), softplus (sigmoid, identity above 20) and bias,
// exactly as mamba_ssm's _chunk_cumsum_bwd; ddt_bias_part = sum_k ddt[k]. ddt_direct = sum of ddt_part over the
// p tiles (chunk_scan, REVERSE). Partial sums are (b, nchunks, h), summed on the host side in a fixed order.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "ssd_common.glsl"

layout(local_size_x_id = 0) in;   // >= Q, a power of two

layout(std430, binding = 0) readonly buffer Dt { float dt[]; };
layout(std430, binding = 1) readonly buffer AVec { float A[]; };
layout(std430, binding = 2) readonly buffer DtBias { float dt_bias[]; };
layout(std430, binding = 3) readonly buffer DtOut { float dt_out[]; };
layout(std430, binding = 4) readonly buffer Gy { float gy[]; };
layout(std430, binding = 5) readonly buffer DdtPart { float ddt_part[]; };       // (b, h, nc, Q, tilesP)
layout(std430, binding = 6) readonly buffer DdaLast { float ddA_last_part[]; };  // (b, h, slices, nc)
layout(std430, binding = 7) writeonly buffer Ddt { float ddt[]; };               // (b, L, h)
layout(std430, binding = 8) writeonly buffer DaPart { float dA_part[]; };        // (b, nc, h)
layout(std430, binding = 9) writeonly buffer DbPart { float ddt_bias_part[]; };  // (b, nc, h)

layout(push_constant) uniform Push {
    uint batch, seqlen, nheads, chunk, nchunks;
    uint flags;            // bit 0: dt_bias given, bit 1: softplus
    float dt_min, dt_max;
    uint tiles_p, slices;
} p;

shared float scan[gl_WorkGroupSize.x];

// Fixed-order tree sum of every invocation's value (all invocations must call it).
float workgroup_sum(float v) {
    const uint t = gl_LocalInvocationID.x;
    barrier();
    scan[t] = v;
    barrier();
    for (uint h = gl_WorkGroupSize.x / 2; h > 0; h >>= 1) {
        if (t < h) {
            scan[t] += scan[t + h];
        }
        barrier();
    }
    const float total = scan[0];
    barrier();
    return total;
}

void main() {
    const uint t = gl_LocalInvocationID.x;
    const uint W = gl_WorkGroupSize.x;
    const uint items = p.nchunks * p.batch * p.nheads;
    for (uint w = gl_WorkGroupID.x; w < items; w += gl_NumWorkGroups.x) {
        const uint c = w % p.nchunks;
        const uint bh = w / p.nchunks;
        const uint head = bh % p.nheads;
        const uint b = bh / p.nheads;
        const uint len = min(p.chunk, p.seqlen - c * p.chunk);
        const uint o = (bh * p.nchunks + c) * p.chunk + t;
        const bool valid = t < len;

        float direct = 0.0;
        float dAcs = 0.0;
        float dto = 0.0;
        if (valid) {
            for (uint k = 0; k < p.tiles_p; ++k) {
                direct += ddt_part[o * p.tiles_p + k];
            }
            dto = dt_out[o];
            dAcs = gy[o] - dto * direct;
            if (t == len - 1) {
                for (uint s = 0; s < p.slices; ++s) {
                    dAcs += ddA_last_part[(bh * p.slices + s) * p.nchunks + c];
                }
            }
        }

        // Reverse inclusive scan: invocation t sums dAcs over t..W-1 (Hillis-Steele on the mirrored index).
        barrier();
        scan[W - 1 - t] = dAcs;
        barrier();
        for (uint off = 1u; off < W; off <<= 1u) {
            const uint m = W - 1 - t;
            const float add = m >= off ? scan[m - off] : 0.0;
            barrier();
            scan[m] += add;
            barrier();
        }
        const float ddA = scan[W - 1 - t];

        const float a = A[head];
        float g = 0.0;
        if (valid) {
            g = direct + a * ddA;
            float v = dt[(b * p.seqlen + c * p.chunk + t) * p.nheads + head];
            if ((p.flags & 1u) != 0u) {
                v += dt_bias[head];
            }
            float sp = v;
            if ((p.flags & 2u) != 0u) {
                sp = softplus_precise(v);
            }
            if (sp < p.dt_min || sp > p.dt_max) {
                g = 0.0;
            }
            if ((p.flags & 2u) != 0u && v <= 20.0) {
                g *= 1.0 / (1.0 + exp(-v));
            }
            ddt[(b * p.seqlen + c * p.chunk + t) * p.nheads + head] = g;
        }
        const float dAsum = workgroup_sum(valid ? dto * ddA : 0.0);
        const float dbsum = workgroup_sum(g);
        if (t == 0) {
            const uint po = (b * p.nchunks + c) * p.nheads + head;
            dA_part[po] = dAsum;
            ddt_bias_part[po] = dbsum;
        }
    }
}
