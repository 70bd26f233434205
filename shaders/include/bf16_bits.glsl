// fp32 to bf16 bits, rounded to nearest even by hand: a plain conversion truncates on some drivers (NVIDIA 580),
// which biases every product by up to 2^-8 and leaves no way to match a reference that rounds as PyTorch does.
// NaN stays a (quiet) NaN: truncating one whose payload sits in the low half would give infinity.
#ifndef MAMBA2_BF16_BITS_GLSL
#define MAMBA2_BF16_BITS_GLSL

uint bf16_bits(float v) {
    const uint u = floatBitsToUint(v);
    return isnan(v) ? (u >> 16) | 0x40u : (u + 0x7FFFu + ((u >> 16) & 1u)) >> 16;
}

#endif
