// A workgroup's argmax of one (value, index) candidate per invocation, in a tree that keeps the lower index on ties,
// so the answer is that of a left-to-right scan; NaN never wins, and NONE (no candidate) loses to anything. Every
// invocation of the workgroup calls it together; the workgroup size is a power of two.
#ifndef MAMBA2_ROW_ARGMAX_GLSL
#define MAMBA2_ROW_ARGMAX_GLSL

const uint NONE = 0xFFFFFFFFu;

shared float best_v[gl_WorkGroupSize.x];
shared uint best_i[gl_WorkGroupSize.x];

// Whether (v, i) beats (bv, bi): larger, or as large and earlier; NaN never beats, anything beats none.
bool beats(float v, uint i, float bv, uint bi) {
    if (i == NONE || isnan(v)) {
        return false;
    }
    return bi == NONE || v > bv || (v == bv && i < bi);
}

// The workgroup's best index (NONE when no invocation had a candidate).
uint row_argmax(float bv, uint bi) {
    const uint tid = gl_LocalInvocationID.x;
    best_v[tid] = bv;
    best_i[tid] = bi;
    barrier();
    for (uint h = gl_WorkGroupSize.x / 2; h > 0; h >>= 1) {
        if (tid < h && beats(best_v[tid + h], best_i[tid + h], best_v[tid], best_i[tid])) {
            best_v[tid] = best_v[tid + h];
            best_i[tid] = best_i[tid + h];
        }
        barrier();
    }
    const uint r = best_i[0];
    barrier();   // every read of best_i[0] is done before the next call writes it
    return r;
}

#endif
