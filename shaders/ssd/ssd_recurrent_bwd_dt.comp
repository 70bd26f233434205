#version 450
// SSD backward in its recurrent form, dt, A and dt_bias: per (batch, head), over the positions in a fixed order,
//   ddA_t   = sum_n R[t, n]                 the gradient of dt_t A (ssd_recurrent_bwd_state.comp)
//   ddt_out = B_t . U[t] + A ddA_t          the input term dt_t x_t B_t^T, then the decay exp(dt_t A)
// then as chunk_cumsum_bwd.comp: through the clamp (zero where it clipped), softplus and bias; and the per-(batch,
// head) partial sums of dt_out ddA (dA) and ddt (dt_bias), summed over the batch afterwards in a fixed order.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "ssd_common.glsl"

layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer Dt { float dt[]; };
layout(std430, binding = 1) readonly buffer AVec { float A[]; };
layout(std430, binding = 2) readonly buffer DtBias { float dt_bias[]; };
layout(std430, binding = 3) readonly buffer DtOut { float dt_out[]; };
layout(std430, binding = 4) readonly buffer Bm { float B[]; };
layout(std430, binding = 5) readonly buffer Ub { float U[]; };   // (b, L, h, n)
layout(std430, binding = 6) readonly buffer Rb { float R[]; };
layout(std430, binding = 7) writeonly buffer Ddt { float ddt[]; };          // (b, L, h)
layout(std430, binding = 8) writeonly buffer DaPart { float dA_part[]; };   // (b, h)
layout(std430, binding = 9) writeonly buffer DbPart { float ddt_bias_part[]; };

layout(push_constant) uniform Push {
    uint batch, seqlen, nheads, ngroups, dstate, chunk, nchunks;
    uint flags;   // SsdFlags (ssd_flags.glsl)
    float dt_min, dt_max;
} p;

void main() {
    GRID_STRIDE_LOOP(bh, p.batch * p.nheads) {
        const uint head = bh % p.nheads;
        const uint b = bh / p.nheads;
        const uint grp = head / (p.nheads / p.ngroups);
        const float a = A[head];
        float dA_sum = 0.0;
        float bias_sum = 0.0;
        for (uint c = 0; c < p.nchunks; ++c) {
            const ChunkSpan span = chunk_span(c, p.chunk, p.nchunks, p.seqlen, SSD_HAS(p.flags, SSD_MIRRORED));
            for (uint k = 0; k < span.len; ++k) {
                const uint tok = b * p.seqlen + span_pos(span, k);
                const uint uo = (tok * p.nheads + head) * p.dstate;
                const uint bo = (tok * p.ngroups + grp) * p.dstate;
                float ddA = 0.0;
                float direct = 0.0;
                for (uint n = 0; n < p.dstate; ++n) {
                    ddA += R[uo + n];
                    direct = fma(B[bo + n], U[uo + n], direct);
                }
                float gr = direct + a * ddA;
                float v = dt[tok * p.nheads + head];
                if (SSD_HAS(p.flags, SSD_DT_BIAS)) {
                    v += dt_bias[head];
                }
                const float sp = SSD_HAS(p.flags, SSD_DT_SOFTPLUS) ? softplus_precise(v) : v;
                if (sp < p.dt_min || sp > p.dt_max) {
                    gr = 0.0;
                }
                if (SSD_HAS(p.flags, SSD_DT_SOFTPLUS) && v <= 20.0) {
                    gr *= 1.0 / (1.0 + exp(-v));
                }
                ddt[tok * p.nheads + head] = gr;
                dA_sum = fma(dt_out[(bh * p.nchunks + c) * p.chunk + k], ddA, dA_sum);
                bias_sum += gr;
            }
        }
        dA_part[bh] = dA_sum;
        ddt_bias_part[bh] = bias_sum;
    }
}
