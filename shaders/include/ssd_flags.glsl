// The SSD kernels' flag bits: one meaning per bit in every kernel. The C# twin is SsdFlags
// (src/Mamba2.Model/Ops/Ssd/SsdFlags.cs); SsdFlagsTests fails when the two disagree.
#ifndef MAMBA2_SSD_FLAGS_GLSL
#define MAMBA2_SSD_FLAGS_GLSL

#define SSD_D_HEAD            1u     // D of shape (h)
#define SSD_D_HEAD_DIM        2u     // D of shape (h, p)
#define SSD_D_TOKEN           4u     // D of shape (b, L, h) (Hydra's per-token skip)
#define SSD_Z                 8u     // z given: y *= silu(z)
#define SSD_SAVE_UNGATED     16u     // also write y before the gate (the backward's dz needs it)
#define SSD_MIRRORED         32u     // mirrored walk: the reverse scan in memory order (ChunkSpan)
#define SSD_ACCUMULATE       64u     // add to what the output holds instead of overwriting it
#define SSD_DT_BIAS         128u     // dt_bias given
#define SSD_DT_SOFTPLUS     256u     // softplus on dt + dt_bias
#define SSD_INITIAL_STATES  512u     // initial_states given
#define SSD_D_FINAL_STATES 1024u     // d final_states given (backward)
#define SSD_D_INITIAL_STATES 2048u   // write d initial_states (backward)
#define SSD_WHOLE_CB       4096u     // tc/chunk_cb: every tile of C.B^T, not only the causal ones
#define SSD_DD_PARTS       8192u     // tc/chunk_scan's dx: also write dD's first level (sums of g x per row block)

#define SSD_HAS(flags, bit) (((flags) & (bit)) != 0u)
#define SSD_D_ANY (SSD_D_HEAD | SSD_D_HEAD_DIM)

#endif
