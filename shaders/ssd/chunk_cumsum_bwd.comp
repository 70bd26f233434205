#version 450
// SSD backward, last step for dt and A: for one (batch, head, chunk), the gradient of each step's dA = dt A,
//   ddA[k] = straddle[k]                  sum_{s < k <= t} M[t, s] (C[t] . B[s])      intra-chunk pairs spanning k
//          + sum_{t >= k} gys[t]          gys[t] = g[t] . y_state[t]                 state entering the chunk -> y
//          + sum_{s < k} T[s]             T[s] = dt x[s] . (dS_next B[s]) e(..)      chunk_state -> state leaving
//          + exp(dA_cs[last]) inner       inner = S_in . dS_next                     decay of the entering state
// (every term a direct sum: no difference of large sums), then as mamba_ssm's _chunk_cumsum_bwd:
// (TELESCOPED: straddle[k] = sum_{m < k} (below[m] - left[m]) from tc/chunk_scan_bwd_dcb's parts, whose pairs inside
// [0, k) cancel exactly; see there)
//   ddt_out = ddt_direct + A ddA ;  dA_part = sum_k dt_out[k] ddA[k]
//   ddt     = ddt_out through the clamp (zero where it clipped), softplus (sigmoid, identity above 20) and bias;
// ddt_bias_part = sum_k ddt[k]. Each input is a set of partial sums from the earlier kernels, added here in a
// fixed order; the partial sums out are (b, nchunks, h), summed on the host side in a fixed order.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "ssd_common.glsl"

layout(local_size_x_id = 0) in;   // >= Q, a power of two
layout(constant_id = 1) const uint TELESCOPED = 0;   // 1: the straddle parts of tc/chunk_scan_bwd_dcb

layout(std430, binding = 0) readonly buffer Dt { float dt[]; };
layout(std430, binding = 1) readonly buffer AVec { float A[]; };
layout(std430, binding = 2) readonly buffer DtBias { float dt_bias[]; };
layout(std430, binding = 3) readonly buffer DtOut { float dt_out[]; };
layout(std430, binding = 4) readonly buffer DaCs { float dA_cs[]; };
layout(std430, binding = 5) readonly buffer DdtPart { float ddt_part[]; };   // (b, h, nc, Q, tiles_p)
layout(std430, binding = 6) readonly buffer Gys { float gys[]; };            // (b, h, nc, Q, tiles_n)
layout(std430, binding = 7) readonly buffer Ts { float ts[]; };              // (b, h, nc, Q, tiles_n)
layout(std430, binding = 8) readonly buffer Straddle { float straddle[]; };  // (b, h, nc, Q, tiles_t, tiles_n)
                                                                             // TELESCOPED: (b, h, nc, Q, tiles_t + tiles_s)
layout(std430, binding = 9) readonly buffer Inner { float inner[]; };        // (b, h, slices, nc)
layout(std430, binding = 10) buffer Ddt { float ddt[]; };                    // (b, L, h)
layout(std430, binding = 11) writeonly buffer DaPart { float dA_part[]; };   // (b, nc, h)
layout(std430, binding = 12) writeonly buffer DbPart { float ddt_bias_part[]; };

layout(push_constant) uniform Push {
    uint batch, seqlen, nheads, chunk, nchunks;
    uint flags;            // SsdFlags (ssd_flags.glsl)
    float dt_min, dt_max;
    uint tiles_p, tiles_n, tiles_t, tile_rows, slices;
    uint tiles_s, tile_cols;   // TELESCOPED: dcb's column tiles
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

// Inclusive prefix sum over the invocations in order (reversed: over t..W-1). All invocations must call it.
float workgroup_scan(float v, bool reversed) {
    const uint W = gl_WorkGroupSize.x;
    const uint m = reversed ? W - 1 - gl_LocalInvocationID.x : gl_LocalInvocationID.x;
    barrier();
    scan[m] = v;
    barrier();
    for (uint off = 1u; off < W; off <<= 1u) {
        const float add = m >= off ? scan[m - off] : 0.0;
        barrier();
        scan[m] += add;
        barrier();
    }
    return scan[m];
}

void main() {
    const uint t = gl_LocalInvocationID.x;
    const uint items = p.nchunks * p.batch * p.nheads;
    for (uint w = gl_WorkGroupID.x; w < items; w += gl_NumWorkGroups.x) {
        const uint c = w % p.nchunks;
        const uint bh = w / p.nchunks;
        const uint head = bh % p.nheads;
        const uint b = bh / p.nheads;
        const ChunkSpan span = chunk_span(c, p.chunk, p.nchunks, p.seqlen, SSD_HAS(p.flags, SSD_MIRRORED));
        const uint len = span.len;
        const uint o = (bh * p.nchunks + c) * p.chunk + t;
        const bool valid = t < len;

        float direct = 0.0;
        float gy = 0.0;
        float tv = 0.0;
        float intra = 0.0;
        float dto = 0.0;
        if (valid) {
            for (uint k = 0; k < p.tiles_p; ++k) {
                direct += ddt_part[o * p.tiles_p + k];
            }
            for (uint k = 0; k < p.tiles_n; ++k) {
                gy += gys[o * p.tiles_n + k];
                tv += ts[o * p.tiles_n + k];
            }
            if (TELESCOPED != 0) {
                // below[t] from the row tiles that met column t, left[t] from the column tiles that met row t: the
                // tiles dcb computed (on or below the diagonal, within the chunk).
                const uint nparts = p.tiles_t + p.tiles_s;
                const uint ts = t / p.tile_cols;
                const uint tt = t / p.tile_rows;
                float below = 0.0;
                float left = 0.0;
                for (uint k = 0; k < p.tiles_t && k * p.tile_rows < len; ++k) {
                    if (ts * p.tile_cols <= k * p.tile_rows + p.tile_rows - 1) {
                        below += straddle[o * nparts + k];
                    }
                }
                for (uint k = 0; k < p.tiles_s && k * p.tile_cols < len && k * p.tile_cols <= tt * p.tile_rows + p.tile_rows - 1; ++k) {
                    left += straddle[o * nparts + p.tiles_t + k];
                }
                intra = below - left;
            } else if (t > 0) {
                // Row tiles that hold a row >= t (and lie within the chunk) wrote straddle[t]; none for t = 0.
                for (uint tt = t / p.tile_rows; tt < p.tiles_t && tt * p.tile_rows < len; ++tt) {
                    for (uint k = 0; k < p.tiles_n; ++k) {
                        intra += straddle[(o * p.tiles_t + tt) * p.tiles_n + k];
                    }
                }
            }
            dto = dt_out[o];
        }
        if (TELESCOPED != 0) {
            intra = workgroup_scan(intra, false) - intra;   // exclusive: m < t
        }
        const float gySuffix = workgroup_scan(gy, true);
        const float tPrefix = workgroup_scan(tv, false) - tv;   // exclusive: s < t
        float decay = 0.0;
        for (uint s = 0; s < p.slices; ++s) {
            decay += inner[(bh * p.slices + s) * p.nchunks + c];
        }
        decay *= exp(min(dA_cs[(bh * p.nchunks + c) * p.chunk + len - 1], 0.0));
        const float ddA = intra + gySuffix + tPrefix + decay;

        const float a = A[head];
        float g = 0.0;
        if (valid) {
            g = direct + a * ddA;
            float v = dt[(b * p.seqlen + span_pos(span, t)) * p.nheads + head];
            if (SSD_HAS(p.flags, SSD_DT_BIAS)) {
                v += dt_bias[head];
            }
            const float sp = SSD_HAS(p.flags, SSD_DT_SOFTPLUS) ? softplus_precise(v) : v;
            if (sp < p.dt_min || sp > p.dt_max) {
                g = 0.0;
            }
            if (SSD_HAS(p.flags, SSD_DT_SOFTPLUS) && v <= 20.0) {
                g *= 1.0 / (1.0 + exp(-v));
            }
            const uint o = (b * p.seqlen + span_pos(span, t)) * p.nheads + head;
            ddt[o] = SSD_HAS(p.flags, SSD_ACCUMULATE) ? ddt[o] + g : g;
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
