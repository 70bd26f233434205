#version 450
// Embedding rows (the ids were range-checked on the host).
//   MODE 0: y[n, :] = table[ids[n], :]
//   MODE 1: dtable[v, :] = sum of dy[n, :] over the positions n with ids[n] = v, in increasing n (the host lists them
//           per v: offsets (V + 1) into positions), so the same inputs give the same bits; 0 for unused rows.
//           With PLUS, that sum + plus[v, :]: a tied head's part of the table's gradient added in the same pass (a
//           table-sized add, reading both terms, otherwise).
//           A frequent token's row sums hundreds of rows of dy (text is Zipf-distributed): their loads are issued
//           STEP at a time and added in order, so the row waits on memory once per STEP positions, not per position.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint MODE = 0;
layout(constant_id = 2) const bool PLUS = false;

layout(std430, binding = 0) readonly buffer Ids { int ids[]; };          // MODE 0: ids; MODE 1: positions by id
layout(std430, binding = 1) readonly buffer Offsets { uint offsets[]; }; // MODE 1: (V + 1)
layout(std430, binding = 2) readonly buffer Src { float src[]; };        // MODE 0: table; MODE 1: dy
layout(std430, binding = 3) writeonly buffer Dst { float dst[]; };       // MODE 0: y; MODE 1: dtable
layout(std430, binding = 4) readonly buffer Plus { float plus[]; };      // MODE 1 with PLUS: added to each row

layout(push_constant) uniform Push {
    uint rows, dim;   // MODE 0: tokens; MODE 1: vocabulary rows
} p;

const uint STEP = 8;

void main() {
    GRID_STRIDE_LOOP(e, p.rows * p.dim) {
        const uint r = e / p.dim;
        const uint j = e % p.dim;
        if (MODE == 0) {
            dst[e] = src[uint(ids[r]) * p.dim + j];
        } else {
            float acc = 0.0;
            uint k = offsets[r];
            const uint end = offsets[r + 1];
            for (; k + STEP <= end; k += STEP) {
                float v[STEP];
                [[unroll]] for (uint i = 0; i < STEP; ++i) {
                    v[i] = src[uint(ids[k + i]) * p.dim + j];
                }
                [[unroll]] for (uint i = 0; i < STEP; ++i) {
                    acc += v[i];
                }
            }
            for (; k < end; ++k) {
                acc += src[uint(ids[k]) * p.dim + j];
            }
            dst[e] = PLUS ? acc + plus[e] : acc;
        }
    }
}
