#version 450
// SSD backward, first step: for every (batch, position, head) row of headdim values,
//   g    = dy * silu(z)                      (the gradient of y before the gate; written only when z is given)
//   dz   = dy * y_pre * silu'(z)             silu'(z) = sigmoid(z) (1 + z (1 - sigmoid(z)))
//   gy   = sum_p g (y_pre - D x)             the gradient of dA_cs through every exp(dA_cs[t] ...) of row t
// y_pre is y before the gate (what the forward saved). One invocation per row (grid stride), layout (b, h, nc, Q)
// for gy.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "ssd_common.glsl"

layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer Dy { float dy[]; };
layout(std430, binding = 1) readonly buffer Z { float z[]; };
layout(std430, binding = 2) readonly buffer YPre { float y_pre[]; };
layout(std430, binding = 3) readonly buffer X { float x[]; };
layout(std430, binding = 4) readonly buffer Dv { float D[]; };
layout(std430, binding = 5) writeonly buffer G { float g[]; };
layout(std430, binding = 6) writeonly buffer Dz { float dz[]; };
layout(std430, binding = 7) writeonly buffer Gy { float gy[]; };

layout(push_constant) uniform Push {
    uint batch, seqlen, nheads, headdim, chunk, nchunks;
    uint flags;   // bit 0: D given, bit 1: D has shape (h, p), bit 2: z given
} p;

void main() {
    GRID_STRIDE_LOOP(row, p.batch * p.seqlen * p.nheads) {
        const uint head = row % p.nheads;
        const uint bt = row / p.nheads;
        const uint t = bt % p.seqlen;
        const uint b = bt / p.seqlen;
        const bool hasD = (p.flags & 1u) != 0u;
        const bool hasZ = (p.flags & 4u) != 0u;
        float dot = 0.0;
        for (uint j = 0; j < p.headdim; ++j) {
            const uint o = row * p.headdim + j;
            float gv = dy[o];
            const float yp = y_pre[o];
            if (hasZ) {
                const float zv = z[o];
                const float sg = 1.0 / (1.0 + exp(-zv));
                dz[o] = gv * yp * sg * (1.0 + zv * (1.0 - sg));
                gv *= zv * sg;
                g[o] = gv;
            }
            float ssm = yp;
            if (hasD) {
                ssm -= D[(p.flags & 2u) != 0u ? head * p.headdim + j : head] * x[o];
            }
            dot = fma(gv, ssm, dot);
        }
        const uint c = t / p.chunk;
        gy[((b * p.nheads + head) * p.nchunks + c) * p.chunk + t - c * p.chunk] = dot;
    }
}
