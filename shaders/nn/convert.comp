#version 450
// Converts a tensor between fp32 and bf16 (Tensor.DType): TO_BF16 rounds each fp32 element to the nearest bf16
// (ties to even, as PyTorch's .to(torch.bfloat16)), else widens each bf16 element to fp32, exactly.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#define TENSORS_BF16   // the bf16 side's loads and stores (16-bit storage)
#include "tensor_elems.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const bool TO_BF16 = true;

layout(std430, binding = 0) buffer F32 { float f32[]; };
layout(std430, binding = 1) buffer Bf16 { TENSOR_ELEM bf16[]; };

layout(push_constant) uniform Push {
    uint n;
} p;

void main() {
    GRID_STRIDE_LOOP(i, p.n) {
        if (TO_BF16) {
            TENSOR_STORE(bf16, i, f32[i]);
        } else {
            f32[i] = TENSOR_LOAD(bf16, i);
        }
    }
}
