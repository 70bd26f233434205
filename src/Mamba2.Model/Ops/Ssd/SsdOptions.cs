using Mamba2.Model.Tensors;

namespace Mamba2.Model.Ops.Ssd;

/// <summary>Which scans the SSD runs.</summary>
public enum SsdDirection
{
    /// <summary>mamba_ssm's causal scan: y = SS(x) + D x.</summary>
    Causal,

    /// <summary>Bi-Mamba2: y = SS(x) + flip(SS(flip(x))) + D x, both scans from zero state, a token's own term in both.</summary>
    BidirectionalSum,

    /// <summary>
    /// Hydra: y = shift(SS(x)) + flip(shift(SS_rev(flip(x)))) + D x, where shift moves the scan's output one step
    /// along its own direction (dropping a token's own term from both scans); SS_rev may have its own dt, B, C.
    /// </summary>
    BidirectionalShift,
}

/// <summary>How a bidirectional forward runs; every path computes the same result (the tests hold each to it).</summary>
public enum SsdBidirectionalPath
{
    /// <summary>The fastest measured: fused for the sum form when the reverse scan shares B and C, composed otherwise.</summary>
    Auto,

    /// <summary>One output pass over both scans (chunk_scan_bidir), sharing C.B^T and the product with x.</summary>
    Fused,

    /// <summary>Two complete causal runs (the second walking the sequence backwards, no copies) combined afterwards: the naive composition.</summary>
    Composed,
}

/// <summary>
/// The optional arguments of mamba_ssm's <c>mamba_chunk_scan_combined</c>, same names and defaults:
/// chunk_size, D, z, dt_bias, initial_states, dt_softplus, dt_limit; plus the direction and the reverse scan's own
/// dt, B and C for the bidirectional forms.
/// </summary>
public sealed record SsdOptions
{
    /// <summary>Chunk length Q (16..256); the sequence length need not be a multiple of it.</summary>
    public int ChunkSize { get; init; } = 256;

    /// <summary>Skip connection, shape (h) or (h, p), or (b, L, h) for the bidirectional forms (Hydra): y += D x.</summary>
    public Tensor? D { get; init; }

    /// <summary>Gate, shape (b, L, h, p): y *= silu(z).</summary>
    public Tensor? Z { get; init; }

    /// <summary>Added to dt before softplus, shape (h).</summary>
    public Tensor? DtBias { get; init; }

    /// <summary>State before the first position, shape (b, h, p, n); zero when absent. Causal only.</summary>
    public Tensor? InitialStates { get; init; }

    /// <summary>dt = softplus(dt + dt_bias) (identity above 20, as mamba_ssm).</summary>
    public bool DtSoftplus { get; init; }

    /// <summary>dt is clamped to [min, max] after softplus; mamba_ssm's default (0, inf) also maps negative dt to 0.</summary>
    public (float Min, float Max) DtLimit { get; init; } = (0f, float.PositiveInfinity);

    /// <summary>Causal (default) or one of the bidirectional forms.</summary>
    public SsdDirection Direction { get; init; } = SsdDirection.Causal;

    /// <summary>The reverse scan's own dt, shape (b, L, h) (bias, softplus and limits apply as to dt); dt when absent.</summary>
    public Tensor? DtRev { get; init; }

    /// <summary>The reverse scan's own B, shape (b, L, g, n); B when absent.</summary>
    public Tensor? BRev { get; init; }

    /// <summary>The reverse scan's own C, shape (b, L, g, n); C when absent.</summary>
    public Tensor? CRev { get; init; }

    /// <summary>
    /// How the bidirectional forward runs (docs/PERF.md: on the H100 the fused pass wins for the sum form sharing B
    /// and C, 5.73 against 6.70 ms at the 370m shape, and loses for the shift form, 7.82 against 7.15).
    /// </summary>
    public SsdBidirectionalPath BidirectionalPath { get; init; } = SsdBidirectionalPath.Auto;

    /// <summary>Tiled (GPUs) or recurrent (CPU drivers) scans; Auto picks by device (<see cref="SsdPaths.Resolve"/>).</summary>
    public SsdPath Path { get; init; } = SsdPath.Auto;

    /// <summary>
    /// What the scan's matrix products are computed in (docs/DESIGN.md, "Precision policy"). <see cref="Precision.Fp32"/>
    /// (default) is the exact path; <see cref="Precision.Fp32Fast"/> and <see cref="Precision.Bf16"/> run chunk_state,
    /// C.B^T and chunk_scan on tensor cores (the tiled path, fp32 tensors in and out; cumsum, decays and states stay
    /// fp32). In the backward, the per-chunk state gradient (chunk_state), dx (chunk_scan run backwards) and dB, dC
    /// (through dcb, the heads' weighted g.x^T per group) run on tensor cores; the cumsum, state passing and the
    /// reductions stay fp32. Bidirectional forms compose two causal runs.
    /// </summary>
    public Precision Precision { get; init; } = Precision.Fp32;

    /// <summary>
    /// Whether a bidirectional forward with these options takes the fused pass on a device whose scans take
    /// <paramref name="path"/>: Auto composes on the recurrent path (two recurrent scans beat the tiled fused pass on
    /// lavapipe; docs/PERF.md). On the tiled path it fuses the scans that share B and C: in exact fp32 the sum form
    /// (the shift form composes faster there), in the tensor-core modes both forms, with D of shape (h) or (h, p)
    /// (<see cref="SsdOp.WhyNotFusedTensorCores"/>).
    /// </summary>
    internal bool UsesFusedPass(SsdPath path) => BidirectionalPath == SsdBidirectionalPath.Fused ||
        BidirectionalPath == SsdBidirectionalPath.Auto && path == SsdPath.Tiled && BRev is null && CRev is null
        && (Precision == Precision.Fp32 ? Direction == SsdDirection.BidirectionalSum : SsdOp.WhyNotFusedTensorCores(this) is null);

    public bool IsBidirectional => Direction != SsdDirection.Causal;

    /// <summary>
    /// Walks the sequence backwards (the kernels' mirrored ChunkSpan): the causal pipeline then computes the
    /// bidirectional reverse scan on the original tensors, outputs and gradients at original positions.
    /// </summary>
    internal bool Mirrored { get; init; }
}
