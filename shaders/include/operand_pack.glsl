// 16-bit tensor-core operands as the bits of 4 in a uvec2: what the tensor-core kernels store in shared memory and
// their cooperative loads read (the GEMM's already-16-bit operands, 8 to a uvec4, the same way). Vectors of 16-bit
// types would be the same bytes, but some compilers (NVIDIA 580's) split their loads and stores into 16-bit accesses.
// OPERAND is the type the cooperative matrices take.
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

// Which stored row and word column invocation tid stages, where each stored row is 64 bytes of wpr words (80 with the
// 16-byte pad) and the workgroup covers blocks of 8 rows (8 wpr invocations): each 2 wpr invocations, the lanes one
// shared store serves at a time, take two rows 4 apart, on opposite halves of the banks (neighbouring padded rows
// would put two of them on one bank), and each wpr of them one whole row, as their loads from memory must read
// (docs/PERF.md: 8 rows, a word each, made the products 20-43% slower). The GEMM's 16-byte words (wpr 4) and the
// SSD kernels' 8-byte ones (wpr 8) take it.
uvec2 paired_rows(uint tid, uint wpr) {
    const uint lane = tid % (8 * wpr);
    return uvec2((tid / (8 * wpr)) * 8 + lane / (2 * wpr) + ((lane % (2 * wpr)) / wpr) * 4, lane % wpr);
}

#endif
