// 16-bit tensor-core operands as the bits of 4 in a uvec2: what the tensor-core kernels store in shared memory and
// their cooperative loads read (the GEMM's already-16-bit operands, 8 to a uvec4, the same way). Vectors of 16-bit types would be the same bytes, but some compilers (NVIDIA 580's)
// split their loads and stores into 16-bit accesses. OPERAND is the type the cooperative matrices take.
#ifndef MAMBA2_OPERAND_PACK_GLSL
#define MAMBA2_OPERAND_PACK_GLSL

#ifdef OPERAND_BF16
#extension GL_EXT_bfloat16 : require
#define OPERAND bfloat16_t
#include "bf16_bits.glsl"
uvec2 pack4(vec4 v) {
    return uvec2(bf16_bits(v.x) | bf16_bits(v.y) << 16, bf16_bits(v.z) | bf16_bits(v.w) << 16);
}
#else
#define OPERAND float16_t
uvec2 pack4(vec4 v) { return uvec2(packHalf2x16(v.xy), packHalf2x16(v.zw)); }
#endif

#endif
