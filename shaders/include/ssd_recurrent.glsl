// Helpers of the recurrent SSD kernels (ssd_recurrent*.comp), for CPU drivers.
//
// Lane-shared loads: on llvmpipe any load inside a loop runs as a per-lane scalar loop, even at an address uniform
// across the workgroup, so loading one value per step costs as much as loading a different one per lane. With SG,
// the device's fixed subgroup size (a specialization constant; 0 where the size may vary), each lane loads one of SG
// consecutive values and subgroupBroadcast hands value j to every lane: one gather for SG uniform values. Every
// invocation of the workgroup must reach these (the kernels keep their loops uniform).
#ifndef MAMBA2_SSD_RECURRENT_GLSL
#define MAMBA2_SSD_RECURRENT_GLSL

#extension GL_KHR_shader_subgroup_basic : require
#extension GL_KHR_shader_subgroup_ballot : require

// SHARE values per lane-shared load (1 without sharing); SHARED_COUNT(m) such loads cover m values.
#define SHARE (SG == 0u ? 1u : SG)
#define SHARED_COUNT(m) (((m) + SHARE - 1u) / SHARE)

// dst[s] = buf[base + s SG + lane] for the lanes within [0, count); 0 past it. The value j is then SHARED_GET(dst, j).
#define SHARED_LOAD(dst, buf, base, count)                                              \
    [[unroll]] for (uint s_ = 0; s_ < dst.length(); ++s_) {                             \
        const uint j_ = s_ * SHARE + (SG == 0u ? 0u : gl_SubgroupInvocationID);         \
        dst[s_] = SG != 0u && j_ < (count) ? buf[(base) + j_] : 0.0;                    \
    }

#define SHARED_GET(src, j) subgroupBroadcast(src[(j) / SHARE], (j) % SHARE)

// exp(dt A), a step's decay. The recurrence multiplies thousands of these where the chunked form exponentiates one
// cumsum difference, so a bias in exp near 0 (llvmpipe's polynomial) compounds: 6e-5 relative error in y over 4096
// nearly-constant steps. Near 0, a Taylor polynomial rounded once (at 1 + ...) instead.
float step_decay(float v) {
    return abs(v) < 0.0625 ? 1.0 + v * (1.0 + v * (0.5 + v * (1.0 / 6.0 + v * (1.0 / 24.0 + v * (1.0 / 120.0))))) : exp(v);
}

#endif
