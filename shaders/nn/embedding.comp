#version 450
// Embedding rows (the ids were range-checked on the host).
//   MODE 0: y[n, :] = table[ids[n], :]
//   MODE 1: dtable[v, :] = sum of dy[n, :] over the positions n with ids[n] = v, in increasing n (the host lists them
//           per v: offsets (V + 1) into positions), so the same inputs give the same bits; 0 for unused rows.
//           With PLUS, that sum + plus[v, :]: a tied head's part of the table's gradient added in the same pass (a
//           table-sized add, reading both terms, otherwise).
//           A frequent token's row sums hundreds of rows of dy (text is Zipf-distributed): their loads are issued
//           STEP at a time and added in order, so the row waits on memory once per STEP positions, not per position.
// With QUADS (d a multiple of 4) an invocation moves four neighbours of a row: 16-byte loads and stores, and a quarter
// of the index reads and arithmetic; each column is summed in the same order, so the same bits.
#extension GL_GOOGLE_include_directive : require
#extension GL_EXT_control_flow_attributes : require
#include "common.glsl"

layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint MODE = 0;
layout(constant_id = 2) const bool PLUS = false;
layout(constant_id = 3) const bool QUADS = false;

layout(std430, binding = 0) readonly buffer Ids { int ids[]; };          // MODE 0: ids; MODE 1: positions by id
layout(std430, binding = 1) readonly buffer Offsets { uint offsets[]; }; // MODE 1: (V + 1)
layout(std430, binding = 2) readonly buffer Src { float src[]; };        // MODE 0: table; MODE 1: dy
layout(std430, binding = 3) writeonly buffer Dst { float dst[]; };       // MODE 0: y; MODE 1: dtable
layout(std430, binding = 4) readonly buffer Plus { float plus[]; };      // MODE 1 with PLUS: added to each row
layout(std430, binding = 2) readonly buffer Src4 { vec4 src4[]; };
layout(std430, binding = 3) writeonly buffer Dst4 { vec4 dst4[]; };
layout(std430, binding = 4) readonly buffer Plus4 { vec4 plus4[]; };

layout(push_constant) uniform Push {
    uint rows, dim;   // MODE 0: tokens; MODE 1: vocabulary rows
} p;

const uint STEP = 8;

// Word w of a tensor: four elements with QUADS, else one (in x).
vec4 src_word(uint w) {
    return QUADS ? src4[w] : vec4(src[w], 0.0, 0.0, 0.0);
}

vec4 plus_word(uint w) {
    return QUADS ? plus4[w] : vec4(plus[w], 0.0, 0.0, 0.0);
}

void store_word(uint w, vec4 v) {
    if (QUADS) {
        dst4[w] = v;
    } else {
        dst[w] = v.x;
    }
}

void main() {
    const uint words = QUADS ? p.dim / 4 : p.dim;   // a row's
    GRID_STRIDE_LOOP(e, p.rows * words) {
        const uint r = e / words;
        const uint j = e % words;
        if (MODE == 0) {
            store_word(e, src_word(uint(ids[r]) * words + j));
        } else {
            vec4 acc = vec4(0.0);
            uint k = offsets[r];
            const uint end = offsets[r + 1];
            for (; k + STEP <= end; k += STEP) {
                vec4 v[STEP];
                [[unroll]] for (uint i = 0; i < STEP; ++i) {
                    v[i] = src_word(uint(ids[k + i]) * words + j);
                }
                [[unroll]] for (uint i = 0; i < STEP; ++i) {
                    acc += v[i];
                }
            }
            for (; k < end; ++k) {
                acc += src_word(uint(ids[k]) * words + j);
            }
            store_word(e, PLUS ? acc + plus_word(e) : acc);
        }
    }
}
