#version 450
// The fp32 FMA ceiling: eight independent chains of fma per invocation (enough in flight to hide the latency), no
// memory traffic but one store each. out[i] = the sum of its chains, so nothing can be folded away (the host checks it).
layout(local_size_x_id = 0) in;

layout(std430, binding = 0) writeonly buffer Out { float outv[]; };

layout(push_constant) uniform Push {
    uint iterations;
    float m, c;
} p;

void main() {
    const uint i = gl_GlobalInvocationID.x;
    float a[8];
    for (int k = 0; k < 8; ++k) {
        a[k] = float(i % 1024u) * 1e-3 + float(k);
    }
    for (uint it = 0; it < p.iterations; ++it) {
        for (int k = 0; k < 8; ++k) {
            a[k] = fma(a[k], p.m, p.c);
        }
    }
    float s = 0.0;
    for (int k = 0; k < 8; ++k) {
        s += a[k];
    }
    outv[i] = s;
}
