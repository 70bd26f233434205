#version 450
// Gradient-norm clipping's scalar, as torch.nn.utils.clip_grad_norm_ (norm 2): from the per-tensor sums of squares
// (added here in order), total = sqrt(sum); coefficient = min(1, max_norm / (total + 1e-6)). One invocation.
layout(local_size_x = 1) in;

layout(std430, binding = 0) readonly buffer Sums { float sums[]; };
layout(std430, binding = 1) writeonly buffer Clip { float clip[]; };   // [0]: the norm, [1]: the coefficient

layout(push_constant) uniform Push {
    uint count, stride;   // sums[i * stride]: each at a bindable offset
    float max_norm;
} p;

void main() {
    float total = 0.0;
    for (uint i = 0; i < p.count; ++i) {
        total += sums[i * p.stride];
    }
    const float norm = sqrt(total);
    clip[0] = norm;
    clip[1] = min(1.0, p.max_norm / (norm + 1e-6));
}
