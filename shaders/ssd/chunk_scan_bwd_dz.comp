#version 450
// SSD backward, first step when z is given: elementwise over (b, L, h, p),
//   g  = dy * silu(z)              the gradient of y before the gate (what every later stage reads)
//   dz = dy * y_pre * silu'(z)     silu'(z) = sigmoid(z) (1 + z (1 - sigmoid(z)))
// with y_pre = y before the gate, saved by the forward. Without z, g is dy itself and this step is skipped.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "ssd_common.glsl"

layout(local_size_x_id = 0) in;

layout(std430, binding = 0) readonly buffer Dy { float dy[]; };
layout(std430, binding = 1) readonly buffer Z { float z[]; };
layout(std430, binding = 2) readonly buffer YPre { float y_pre[]; };
layout(std430, binding = 3) writeonly buffer G { float g[]; };
layout(std430, binding = 4) writeonly buffer Dz { float dz[]; };

layout(push_constant) uniform Push {
    uint count;
} p;

void main() {
    GRID_STRIDE_LOOP(o, p.count) {
        const float zv = z[o];
        const float sg = 1.0 / (1.0 + exp(-zv));
        dz[o] = dy[o] * y_pre[o] * sg * (1.0 + zv * (1.0 - sg));
        g[o] = dy[o] * zv * sg;
    }
}
