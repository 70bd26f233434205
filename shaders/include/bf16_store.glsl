// Outputs written as bf16 bits (rounded to nearest even) into 16-bit storage, for variants built with OUT_BF16:
// a gradient that only tensor-core products read is stored straight as their packed bf16 operands (two to a
// 32-bit word, row-major), with no fp32 copy and no packing pass. Columns need not be even: each element is its
// own 16-bit store. The device must have storageBuffer16BitAccess.
#ifndef MAMBA2_BF16_STORE_GLSL
#define MAMBA2_BF16_STORE_GLSL
#extension GL_EXT_shader_16bit_storage : require
#include "bf16_bits.glsl"
#define BF16_STORE(arr, i, v) arr[i] = uint16_t(bf16_bits(v))
#define BF16_STORE4(words2, i, v) words2[i] = bf16_words4(v)   // four neighbours into a uvec2 alias (8-byte aligned)
#endif
