// The SSD tensors a kernel variant reads and writes as fp32 or, built with TENSORS_BF16, as bf16 (the bf16 mode's
// activations): declare them with TENSOR_ELEM (one element) and TENSOR_WORD4 (four consecutive elements, for 16-byte
// and 8-byte loads), read them with TENSOR_LOAD / TENSOR_LOAD4 and write them with TENSOR_STORE / TENSOR_STORE4; the arithmetic stays
// fp32 either way. bf16 is widened exactly and rounded to nearest even (bf16_bits.glsl). Needs
// storageBuffer16BitAccess with TENSORS_BF16 (single 16-bit stores: a tile's columns need not be even).
#ifndef MAMBA2_TENSOR_ELEMS_GLSL
#define MAMBA2_TENSOR_ELEMS_GLSL

#if defined(TENSORS_BF16) || defined(IN_BF16)
#extension GL_EXT_shader_16bit_storage : require
#include "bf16_bits.glsl"

float bf16_widen(uint bits) {
    return uintBitsToFloat(bits << 16);
}

vec4 bf16_widen4(uvec2 w) {
    return vec4(uintBitsToFloat(w.x << 16), uintBitsToFloat(w.x & 0xFFFF0000u), uintBitsToFloat(w.y << 16), uintBitsToFloat(w.y & 0xFFFF0000u));
}
#endif

// IN_BF16, independent of TENSORS_BF16: the columns a kernel reads in place from the fused projection's output
// (in_proj's z, xBC and dt; bf16 in the bf16 mode) are declared IN_ELEM / IN_WORD4 and read with IN_LOAD / IN_LOAD4.
#ifdef IN_BF16
#define IN_ELEM uint16_t
#define IN_WORD4 uvec2
#define IN_LOAD(arr, i) bf16_widen(uint(arr[i]))
#define IN_LOAD4(arr4, i) bf16_widen4(arr4[i])
#else
#define IN_ELEM float
#define IN_WORD4 vec4
#define IN_LOAD(arr, i) (arr[i])
#define IN_LOAD4(arr4, i) (arr4[i])
#endif

#ifdef TENSORS_BF16
#define TENSOR_ELEM uint16_t
#define TENSOR_WORD4 uvec2
#define TENSOR_LOAD(arr, i) bf16_widen(uint(arr[i]))
#define TENSOR_LOAD4(arr4, i) bf16_widen4(arr4[i])
#define TENSOR_STORE(arr, i, v) arr[i] = uint16_t(bf16_bits(v))
#define TENSOR_STORE4(arr4, i, v) arr4[i] = bf16_words4(v)
#else
#define TENSOR_ELEM float
#define TENSOR_WORD4 vec4
#define TENSOR_LOAD(arr, i) (arr[i])
#define TENSOR_LOAD4(arr4, i) (arr4[i])
#define TENSOR_STORE(arr, i, v) arr[i] = (v)
#define TENSOR_STORE4(arr4, i, v) arr4[i] = (v)
#endif

#endif
