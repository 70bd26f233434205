#version 450
// fp32 to tensor-core operands: x times its tensor's power-of-two scale (operand_scale.glsl), as f16, as bf16
// rounded to nearest even, or (bf16 values as f16) rounded to bf16 and then scaled into f16, which holds them
// exactly: bf16's products on f16 tensor cores. Two to a 32-bit word, so that a tensor-core GEMM reads half the
// bytes and converts nothing (tc/gemm_coopmat.comp with INPUT16 divides the scales out). An odd count's last word
// holds a zero in its high half.
#extension GL_GOOGLE_include_directive : require
#include "operand_scale.glsl"
#include "bf16_bits.glsl"
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint FORM = 0;   // 0 f16, 1 bf16, 2 bf16 values as f16

layout(std430, binding = 0) readonly buffer Src { float src[]; };
layout(std430, binding = 1) writeonly buffer Dst { uint dst[]; };
// f16 forms read their tensor's word (absmax's); bf16 has fp32's range and writes its scale of 1 (bits 0) itself.
layout(std430, binding = 2) buffer Scales { uint absmax_bits[]; };
// The same four elements (two words) at a time: a quarter of the load instructions, four times the bytes each has
// in flight (the bindings start at offset 0, so every fourth element is 16-byte aligned).
layout(std430, binding = 0) readonly buffer Src4 { vec4 src4[]; };
layout(std430, binding = 1) writeonly buffer Dst2 { uvec2 dst2[]; };

layout(push_constant) uniform Push {
    uint count;   // fp32 elements
    uint slot;    // which of absmax_bits is this tensor's
} p;

uint word(vec2 x, float scale) {
    const vec2 v = scale * (FORM == 2 ? bf16_round(x) : x);
    return FORM == 1 ? bf16_bits(v.x) | (bf16_bits(v.y) << 16) : packHalf2x16(v);
}

void main() {
    const uint words = (p.count + 1) / 2;
    const uint quads = p.count / 4;
    const uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
    float scale = 1.0;
    if (FORM == 1) {
        if (gl_GlobalInvocationID.x == 0) {
            absmax_bits[p.slot] = 0u;
        }
    } else {
        scale = operand_scale(absmax_bits[p.slot]);
    }
    for (uint q = gl_GlobalInvocationID.x; q < quads; q += stride) {
        const vec4 x = src4[q];
        dst2[q] = uvec2(word(x.xy, scale), word(x.zw, scale));
    }
    // The last one to three elements: a word or two.
    for (uint w = 2 * quads + gl_GlobalInvocationID.x; w < words; w += stride) {
        dst[w] = word(vec2(src[2 * w], 2 * w + 1 < p.count ? src[2 * w + 1] : 0.0), scale);
    }
}
