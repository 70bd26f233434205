// Layouts and helpers shared by the SSD kernels (see docs/DESIGN.md for the math).
//   x, z, y        (b, L, h, p)          dt            (b, L, h)
//   B, C           (b, L, g, n)          head i reads group i / (h / g)
//   dt_out, dA_cs  (b, h, nchunks, Q)    dt after bias/softplus/clamp, and its within-chunk cumulative sum times A
//   states         (b, nchunks, h, p, n) chunk_state writes each chunk's own state; state_passing turns it, in
//                                        place, into the state entering the chunk
//   initial/final  (b, h, p, n)
// Only differences dA_cs[t] - dA_cs[s] with s <= t (and dA_cs[t] itself) are exponentiated: arguments are <= 0.
#ifndef MAMBA2_SSD_COMMON_GLSL
#define MAMBA2_SSD_COMMON_GLSL

#include "ssd_flags.glsl"

// softplus as mamba_ssm computes it (identity above 20), accurate for very negative x: log1p(e^x) by
// Goldberg's trick, since log(1 + u) in fp32 loses u below about 1e-7.
float softplus_precise(float x) {
    if (x > 20.0) {
        return x;
    }
    float u = exp(x);
    float w = 1.0 + u;
    return w == 1.0 ? u : log(w) * (u / (w - 1.0));
}

// dA_cs is stored as an unevaluated sum hi + lo (chunk_cumsum): its values grow to |Q dt A| (hundreds) while the
// kernels need differences of nearby positions, which a single fp32 value would round to ~1e-5 absolute. This
// difference is accurate to fp32 relative precision: hi_a - hi_b is exact for nearby values (Sterbenz).
float cs_diff(float hi_a, float lo_a, float hi_b, float lo_b) {
    precise float d = hi_a - hi_b;
    precise float l = lo_a - lo_b;
    precise float r = d + l;
    return r;
}

// The backward's local state gradient of the walk's first chunk is used only to form d initial_states
// (state_passing_bwd): chunk_state (GRAD) computes it, and state_passing_bwd reads it, only when that is asked for.
bool first_chunk_state_grad_unused(uint c, uint flags) {
    return c == 0u && !SSD_HAS(flags, SSD_D_INITIAL_STATES);
}

// A chunk as a kernel walks it. Mirrored, the walk runs the sequence backwards, so that a causal pass computes the
// bidirectional reverse scan on the original tensors (no flipped copies): chunk c is the sequence's chunk
// nchunks-1-c and its position k is the sequence position start + len - 1 - k. Per-position tensors are addressed
// through span_pos; per-chunk buffers (dt_out, dA_cs, states) keep the walk's (c, k) order.
struct ChunkSpan {
    uint start;
    uint len;
    bool mirror;
};

ChunkSpan chunk_span(uint c, uint chunk, uint nchunks, uint seqlen, bool mirror) {
    const uint oc = mirror ? nchunks - 1u - c : c;
    return ChunkSpan(oc * chunk, min(chunk, seqlen - oc * chunk), mirror);
}

uint span_pos(ChunkSpan s, uint k) {
    return s.mirror ? s.start + s.len - 1u - k : s.start + k;
}

// The Hydra (shift) form's backward reads its upstream gradient one step from each run's own position,
// g_run[t] = g[t + shift] (0 outside [0, L)), instead of from a shifted copy. The shift is a specialization
// constant code (0: none, 1: +1, 2: -1), so that the unshifted kernels compile exactly as without it: as a push
// constant flag it cost the causal backward's dx kernel 3x on the H100 (2.86 -> 9.23 ms at the 370m shape).
// g_at gives the sequence position to read and whether there is one.
bool g_at(uint pos, uint code, uint seqlen, out uint shifted) {
    shifted = code == 0u ? pos : code == 1u ? pos + 1u : pos - 1u;   // pos - 1 wraps past seqlen at 0
    return code == 0u || shifted < seqlen;
}

// Rows k0 .. k0 + count - 1 of a chunk (walk order, each read `code` steps away as g_at) of a per-position tensor
// (batch, seqlen, H, W), at head index hidx and columns col .. col + cols - 1, as a tensor-core slice reads them
// (TC_WORD4): true when every row lies inside the chunk and the sequence, the columns inside the row, and rows start
// on 16-byte boundaries. Then row k0 + r starts at vec4 index at + r * step (step < 0 in a mirrored chunk).
bool span_rows4(ChunkSpan s, uint k0, uint count, uint code, uint b, uint seqlen, uint H, uint hidx, uint W,
                uint col, uint cols, out int at, out int step) {
    at = 0;
    step = 0;
    if (W % 4u != 0u || col % 4u != 0u || col + cols > W || k0 + count > s.len) {
        return false;
    }
    const int dir = s.mirror ? -1 : 1;
    const int first = int(span_pos(s, k0)) + (code == 0u ? 0 : code == 1u ? 1 : -1);
    const int last = first + dir * int(count - 1u);
    if (min(first, last) < 0 || max(first, last) >= int(seqlen)) {
        return false;
    }
    const int row4 = int(H * W / 4u);
    at = (int(b * seqlen) + first) * row4 + int((hidx * W + col) / 4u);
    step = dir * row4;
    return true;
}

#endif
