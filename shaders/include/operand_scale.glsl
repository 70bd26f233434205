// The power of two a tensor's elements are multiplied by before they become 16-bit tensor-core operands: it maps
// the largest |x| (its float bits, from nn/absmax.comp) into [2^14, 2^15), inside f16's range with room for
// rounding up, and lifts small tensors (gradients) clear of f16's subnormals. Exact both ways; 1 for an all-zero
// or non-finite tensor.
float operand_scale(uint absmax_bits) {
    const float m = uintBitsToFloat(absmax_bits);
    if (m == 0.0 || isinf(m) || isnan(m)) {
        return 1.0;
    }
    int e;
    frexp(m, e);   // m = f 2^e, f in [0.5, 1)
    return exp2(float(clamp(15 - e, -126, 126)));
}
