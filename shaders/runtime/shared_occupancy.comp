#version 450
// Workgroups an SM against shared memory per workgroup. Each run of 32 invocations follows one chain of dependent
// loads through a small buffer (cache-resident, and one address a load for the whole run: every step waits the
// load's latency, not the cache's throughput, which one chain per invocation saturated on the H200), so the time
// of a fixed number of workgroups scales inversely with how many the device keeps resident at once. WORDS words of shared
// memory are declared and indexed dynamically, so that the whole array is allocated and counts.
layout(local_size_x_id = 0) in;
layout(constant_id = 1) const uint WORDS = 1;

layout(std430, binding = 0) readonly buffer Chain { uint next[]; };
layout(std430, binding = 1) writeonly buffer Out { uint outv[]; };

layout(push_constant) uniform Push {
    uint steps;
    uint mask;     // the chain's length - 1 (a power of two)
    uint spread;   // max(1, WORDS / local size): the invocations' slots span the whole array
} p;

const uint RUN = 32;   // invocations a chain: a subgroup on NVIDIA, half of one on AMD's wave64

shared uint pad[WORDS];

void main() {
    const uint tid = gl_LocalInvocationID.x;
    uint i = (gl_GlobalInvocationID.x / RUN) & p.mask;
    for (uint s = 0; s < p.steps; ++s) {
        i = next[i];
    }
    // Through shared memory and back: the host checks that every invocation ends where the chain says.
    const uint slot = tid * p.spread;   // below WORDS where tid < WORDS: distinct slots
    if (tid < WORDS) {
        pad[slot] = i;
    }
    barrier();
    outv[gl_GlobalInvocationID.x] = tid < WORDS ? pad[slot] : i;
}
