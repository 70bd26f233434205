// fp32 to bf16 bits, rounded to nearest even by hand: a plain conversion truncates on some drivers (NVIDIA 580),
// which biases every product by up to 2^-8 and leaves no way to match a reference that rounds as PyTorch does.
// NaN stays a (quiet) NaN: truncating one whose payload sits in the low half would give infinity.
#ifndef MAMBA2_BF16_BITS_GLSL
#define MAMBA2_BF16_BITS_GLSL

uint bf16_bits(float v) {
    const uint u = floatBitsToUint(v);
    return isnan(v) ? (u >> 16) | 0x40u : (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
}

// The bf16 value nearest v, as an fp32: what bf16 products multiply, for kernels that multiply it as f16 (a bf16
// value times a power of two within f16's range is an f16 value).
float bf16_round(float v) {
    return uintBitsToFloat(bf16_bits(v) << 16);
}

vec2 bf16_round(vec2 v) {
    return vec2(bf16_round(v.x), bf16_round(v.y));
}

vec4 bf16_round(vec4 v) {
    return vec4(bf16_round(v.x), bf16_round(v.y), bf16_round(v.z), bf16_round(v.w));
}

// Four neighbours of a row as bf16 bits, two to a word in row order (the first in the low half).
uvec2 bf16_words4(vec4 v) {
    return uvec2(bf16_bits(v.x) | (bf16_bits(v.y) << 16), bf16_bits(v.z) | (bf16_bits(v.w) << 16));
}

#endif
