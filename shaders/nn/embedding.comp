#version 450
// Embedding rows (the ids were range-checked on the host).
//   MODE 0: y[n, :] = table[ids[n], :]
//   MODE 1: dtable[v, :] = sum of dy[n, :] over the positions n with ids[n] = v, in increasing n (the host lists them
//           per v: offsets (V + 1) into positions), so the same inputs give the same bits; 0 for unused rows.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint MODE = 0;

layout(std430, binding = 0) readonly buffer Ids { int ids[]; };          // MODE 0: ids; MODE 1: positions by id
layout(std430, binding = 1) readonly buffer Offsets { uint offsets[]; }; // MODE 1: (V + 1)
layout(std430, binding = 2) readonly buffer Src { float src[]; };        // MODE 0: table; MODE 1: dy
layout(std430, binding = 3) writeonly buffer Dst { float dst[]; };       // MODE 0: y; MODE 1: dtable

layout(push_constant) uniform Push {
    uint rows, dim;   // MODE 0: tokens; MODE 1: vocabulary rows
} p;

void main() {
    GRID_STRIDE_LOOP(e, p.rows * p.dim) {
        const uint r = e / p.dim;
        const uint j = e % p.dim;
        if (MODE == 0) {
            dst[e] = src[uint(ids[r]) * p.dim + j];
        } else {
            float acc = 0.0;
            for (uint k = offsets[r]; k < offsets[r + 1]; ++k) {
                acc += src[uint(ids[k]) * p.dim + j];
            }
            dst[e] = acc;
        }
    }
}
