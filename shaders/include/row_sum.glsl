// A workgroup's sum of one float per invocation, in a fixed order (deterministic, any device): 16 partial sums of
// consecutive invocations, then every invocation adds the 16 in order. Two barriers and no subgroup operations;
// every invocation of the workgroup calls it together. The workgroup size is a power of two.
#ifndef MAMBA2_ROW_SUM_GLSL
#define MAMBA2_ROW_SUM_GLSL

const uint ROW_SUM_PARTS = gl_WorkGroupSize.x < 16 ? gl_WorkGroupSize.x : 16;

shared float row_red[gl_WorkGroupSize.x];
shared float row_red2[16];

float row_sum(float v) {
    const uint tid = gl_LocalInvocationID.x;
    const uint per = gl_WorkGroupSize.x / ROW_SUM_PARTS;
    row_red[tid] = v;
    barrier();
    if (tid < ROW_SUM_PARTS) {
        float s = 0.0;
        for (uint k = 0; k < per; ++k) {
            s += row_red[tid * per + k];
        }
        row_red2[tid] = s;
    }
    barrier();   // also: every row_red read above is done before the next call writes it
    float total = 0.0;
    for (uint k = 0; k < ROW_SUM_PARTS; ++k) {
        total += row_red2[k];
    }
    return total;   // the next call's first barrier orders these reads before row_red2 is written again
}

#endif
