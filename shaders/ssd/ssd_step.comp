#version 450
// One step of the SSD recurrence (generation, mamba_ssm's selective_state_update): per (batch, head, p),
//   dt = clamp(softplus(dt_raw + dt_bias)) ;  S[p, :] = exp(dt A) S[p, :] + dt x[p] B ;  y[p] = S[p, :] . C + D x[p]
// x (b, h, p), dt (b, h), B and C (b, g, n), state (b, h, p, n) updated in place.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "ssd_common.glsl"

layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer X { float x[]; };
layout(std430, binding = 1) readonly buffer Dt { float dt[]; };
layout(std430, binding = 2) readonly buffer AVec { float A[]; };
layout(std430, binding = 3) readonly buffer Bm { float B[]; };
layout(std430, binding = 4) readonly buffer Cm { float C[]; };
layout(std430, binding = 5) readonly buffer Dv { float D[]; };
layout(std430, binding = 6) readonly buffer DtBias { float dt_bias[]; };
layout(std430, binding = 7) buffer State { float state[]; };
layout(std430, binding = 8) writeonly buffer Y { float y[]; };

layout(push_constant) uniform Push {
    uint batch, nheads, ngroups, headdim, dstate;
    uint flags;   // SsdFlags (ssd_flags.glsl)
    float dt_min, dt_max;
} p;

void main() {
    GRID_STRIDE_LOOP(e, p.batch * p.nheads * p.headdim) {
        const uint pi = e % p.headdim;
        const uint bh = e / p.headdim;
        const uint head = bh % p.nheads;
        const uint b = bh / p.nheads;
        const uint grp = head / (p.nheads / p.ngroups);
        float v = dt[bh];
        if (SSD_HAS(p.flags, SSD_DT_BIAS)) {
            v += dt_bias[head];
        }
        if (SSD_HAS(p.flags, SSD_DT_SOFTPLUS)) {
            v = softplus_precise(v);
        }
        v = min(max(v, p.dt_min), p.dt_max);
        const float a = exp(v * A[head]);
        const float xv = x[e];
        const uint bc = (b * p.ngroups + grp) * p.dstate;
        float acc = 0.0;
        for (uint n = 0; n < p.dstate; ++n) {
            const uint si = e * p.dstate + n;
            const float s = a * state[si] + v * xv * B[bc + n];
            state[si] = s;
            acc = fma(s, C[bc + n], acc);
        }
        if (SSD_HAS(p.flags, SSD_D_HEAD)) {
            acc += D[head] * xv;
        } else if (SSD_HAS(p.flags, SSD_D_HEAD_DIM)) {
            acc += D[head * p.headdim + pi] * xv;
        }
        y[e] = acc;
    }
}
