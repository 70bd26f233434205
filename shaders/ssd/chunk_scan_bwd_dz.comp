#version 450
// SSD backward, first step when z is given: elementwise over (b, L, h, p),
//   g  = dy * silu(z)              the gradient of y before the gate (what every later stage reads)
//   dz = dy * y_pre * silu'(z)     silu'(z) = sigmoid(z) (1 + z (1 - sigmoid(z)))
// with y_pre = y before the gate, saved by the forward. Without z, g is dy itself and this step is skipped.
// Built with TENSORS_BF16, every tensor here is bf16 (the arithmetic fp32).
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "ssd_common.glsl"

layout(local_size_x_id = 0) in;

#include "tensor_elems.glsl"
layout(std430, binding = 0) readonly buffer Dy { TENSOR_ELEM dy[]; };
layout(std430, binding = 1) readonly buffer Z { TENSOR_ELEM z[]; };
layout(std430, binding = 2) readonly buffer YPre { TENSOR_ELEM y_pre[]; };
layout(std430, binding = 3) writeonly buffer G { TENSOR_ELEM g[]; };
layout(std430, binding = 4) writeonly buffer Dz { TENSOR_ELEM dz[]; };

layout(push_constant) uniform Push {
    uint count;
} p;

void main() {
    GRID_STRIDE_LOOP(o, p.count) {
        const float zv = TENSOR_LOAD(z, o);
        const float d = TENSOR_LOAD(dy, o);
        const float sg = 1.0 / (1.0 + exp(-zv));
        TENSOR_STORE(dz, o, d * TENSOR_LOAD(y_pre, o) * sg * (1.0 + zv * (1.0 - sg)));
        TENSOR_STORE(g, o, d * zv * sg);
    }
}
