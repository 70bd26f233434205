#version 450
// Cross-entropy over rows of logits (N, V) against int targets, PyTorch's F.cross_entropy(reduction='mean',
// ignore_index): loss = sum over rows with target != ignore of (logsumexp(l) - l[target]) / their count.
//   MODE 0 (one workgroup per row): per row the pair (loss, counted) and lse; fixed-order trees.
//   MODE 1 (one invocation): loss = sum / count from the pairs' sums (NaN when every row is ignored, as PyTorch).
//   MODE 2 (grid stride): dlogits = (softmax(l) - onehot(target)) dloss / count, 0 on ignored rows.
// The host sums the pairs over the rows in a fixed order between MODE 0 and MODE 1.
// Targets outside [0, V) other than ignore_index are flagged in status (checked by the host) and treated as ignored.
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x_id = 0) in;   // a power of two
layout(constant_id = 1) const uint MODE = 0;

layout(std430, binding = 0) readonly buffer Logits { float logits[]; };
layout(std430, binding = 1) readonly buffer Targets { int targets[]; };
layout(std430, binding = 2) buffer Pairs { float pairs[]; };   // MODE 0: (N, 2) loss, counted; MODE 1, 2: their sums (2)
layout(std430, binding = 3) buffer Lse { float lse[]; };       // (N)
layout(std430, binding = 4) buffer Scalar { float scalar[]; }; // MODE 1: the loss (written); MODE 2: dloss (read)
layout(std430, binding = 5) writeonly buffer DLogits { float dlogits[]; };
layout(std430, binding = 6) buffer Status { uint status[]; };        // [0]: a target was out of range

layout(push_constant) uniform Push {
    uint rows, vocab;
    int ignore_index;
} p;

shared float red[gl_WorkGroupSize.x];

float tree(float v, bool is_max) {
    const uint tid = gl_LocalInvocationID.x;
    barrier();
    red[tid] = v;
    barrier();
    for (uint h = gl_WorkGroupSize.x / 2; h > 0; h >>= 1) {
        if (tid < h) {
            red[tid] = is_max ? max(red[tid], red[tid + h]) : red[tid] + red[tid + h];
        }
        barrier();
    }
    const float r = red[0];
    barrier();
    return r;
}

void main() {
    const uint tid = gl_LocalInvocationID.x;
    if (MODE == 0) {
        for (uint row = gl_WorkGroupID.x; row < p.rows; row += gl_NumWorkGroups.x) {
            const uint base = row * p.vocab;
            float m = -3.402823466e38;
            for (uint j = tid; j < p.vocab; j += gl_WorkGroupSize.x) {
                m = max(m, logits[base + j]);
            }
            m = tree(m, true);
            float s = 0.0;
            for (uint j = tid; j < p.vocab; j += gl_WorkGroupSize.x) {
                s += exp(logits[base + j] - m);
            }
            s = tree(s, false);
            if (tid == 0) {
                const float l = m + log(s);
                const int t = targets[row];
                const bool valid = t != p.ignore_index && t >= 0 && t < int(p.vocab);
                if (t != p.ignore_index && !valid) {
                    status[0] = 1u;
                }
                lse[row] = l;
                pairs[2 * row] = valid ? l - logits[base + uint(t)] : 0.0;
                pairs[2 * row + 1] = valid ? 1.0 : 0.0;
            }
        }
    } else if (MODE == 1) {
        if (gl_GlobalInvocationID.x == 0) {
            scalar[0] = pairs[0] / pairs[1];
        }
    } else {
        const float scale = scalar[0] / pairs[1];
        GRID_STRIDE_LOOP(e, p.rows * p.vocab) {
            const uint row = e / p.vocab;
            const int t = targets[row];
            const bool valid = t != p.ignore_index && t >= 0 && t < int(p.vocab);
            float g = 0.0;
            if (valid) {
                g = exp(logits[e] - lse[row]) - (int(e % p.vocab) == t ? 1.0 : 0.0);
            }
            dlogits[e] = g * scale;
        }
    }
}
