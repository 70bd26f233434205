#version 450
// One AdamW step over a parameter tensor, as torch.optim.AdamW (decoupled weight decay, then Adam):
//   p *= 1 - lr wd ;  g' = g * clip ;  m = b1 m + (1 - b1) g' ;  v = b2 v + (1 - b2) g'^2
// (1 - b) comes from the host, computed in double as PyTorch does with its Python-float betas.
//   p -= (lr / bc1) m / (sqrt(v) / sqrt(bc2) + eps)          bc_i = 1 - b_i^step
// clip is the gradient-norm clipping coefficient (grad_norm.comp) read from a buffer, so no host round trip.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;

layout(std430, binding = 0) buffer P { float param[]; };
layout(std430, binding = 1) readonly buffer G { float grad[]; };
layout(std430, binding = 2) buffer M { float m1[]; };
layout(std430, binding = 3) buffer V { float m2[]; };
layout(std430, binding = 4) readonly buffer Clip { float clip[]; };   // [0]: the norm, [1]: the coefficient

layout(push_constant) uniform Push {
    uint n;
    float lr, beta1, one_minus_beta1, beta2, one_minus_beta2, eps, weight_decay, bias_correction1, bias_correction2;
    uint use_clip;
} p;

void main() {
    const float scale = p.use_clip != 0u ? clip[1] : 1.0;
    const float step = p.lr / p.bias_correction1;
    const float root_bc2 = sqrt(p.bias_correction2);
    GRID_STRIDE_LOOP(i, p.n) {
        const float g = grad[i] * scale;
        const float m = p.beta1 * m1[i] + p.one_minus_beta1 * g;
        const float v = p.beta2 * m2[i] + p.one_minus_beta2 * g * g;
        m1[i] = m;
        m2[i] = v;
        float w = param[i] * (1.0 - p.lr * p.weight_decay);
        w -= step * m / (sqrt(v) / root_bc2 + p.eps);
        param[i] = w;
    }
}
