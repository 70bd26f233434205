// 16-bit tensor-core operands as the bits of 4 in a uvec2: what the tensor-core kernels store in shared memory and
// their cooperative loads read. Vectors of 16-bit types would be the same bytes, but some compilers (NVIDIA 580's)
// split their loads and stores into 16-bit accesses. OPERAND is the type the cooperative matrices take.
#ifndef MAMBA2_OPERAND_PACK_GLSL
#define MAMBA2_OPERAND_PACK_GLSL

#ifdef OPERAND_BF16
#extension GL_EXT_bfloat16 : require
#define OPERAND bfloat16_t
// Round to nearest even by hand: a plain conversion truncates on some drivers (NVIDIA 580), which biases every
// product by up to 2^-8 and leaves no way to match a reference that rounds as PyTorch does.
uint operand_bits(float v) {
    uint u = floatBitsToUint(v);
    if (!isnan(v)) {
        u += 0x7FFFu + ((u >> 16) & 1u);
    }
    return u >> 16;
}
uvec2 pack4(vec4 v) {
    return uvec2(operand_bits(v.x) | operand_bits(v.y) << 16, operand_bits(v.z) | operand_bits(v.w) << 16);
}
#else
#define OPERAND float16_t
uvec2 pack4(vec4 v) { return uvec2(packHalf2x16(v.xy), packHalf2x16(v.zw)); }
#endif

#endif
