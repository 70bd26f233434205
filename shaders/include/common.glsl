// Shared helpers for every compute shader. Kernels never assume a subgroup or grid size: they loop with a
// stride over whatever grid the host could dispatch within the device's limits.
#ifndef MAMBA2_COMMON_GLSL
#define MAMBA2_COMMON_GLSL

// Flat invocation index and stride for 1-D grid-stride loops.
#define GRID_STRIDE_LOOP(i, n) \
    for (uint i = gl_GlobalInvocationID.x; i < (n); i += gl_NumWorkGroups.x * gl_WorkGroupSize.x)

// x * sigmoid(x), the SiLU (swish) activation.
float silu(float v) {
    return v / (1.0 + exp(-v));
}

#endif
