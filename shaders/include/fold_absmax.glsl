// FOLD_ABSMAX kernels fold the largest |v| they write into absmax_out[FOLD_SLOT] (float bits: non-negative floats
// order as their bits), as nn/absmax.comp finds it reading a tensor back (it folds the same way): the scale word of
// the 16-bit operands the values become (operand_scale.glsl), so that packing them reads them once
// (nn/to_operand16.comp) instead of twice. One atomic a workgroup. The including shader declares FOLD_ABSMAX (a
// specialization constant, or a constant) and the binding absmax_out, and may define FOLD_SLOT (0 otherwise); every
// invocation calls fold_absmax once, at the end, in uniform control flow.
#ifndef MAMBA2_FOLD_ABSMAX_GLSL
#define MAMBA2_FOLD_ABSMAX_GLSL

#ifndef FOLD_SLOT
#define FOLD_SLOT 0u
#endif

shared uint fold_max;

// The running max an invocation keeps of what it writes.
uint fold_value(uint m, float v) {
    return max(m, floatBitsToUint(abs(v)));
}

// The largest of the workgroup's running maxes, to every invocation. Every invocation calls it together, in uniform
// control flow; a second call needs a barrier between (its zeroing would race this one's reads).
uint workgroup_max(uint m) {
    if (gl_LocalInvocationIndex == 0) {
        fold_max = 0u;
    }
    barrier();
    atomicMax(fold_max, m);
    barrier();
    return fold_max;
}

void fold_absmax(uint m) {
    if (!FOLD_ABSMAX) {
        return;
    }
    const uint largest = workgroup_max(m);
    if (gl_LocalInvocationIndex == 0) {
        atomicMax(absmax_out[FOLD_SLOT], largest);
    }
}

#endif
