using Mamba2.Model.Tensors;

namespace Mamba2.Model.Ops.Ssd;

/// <summary>
/// The optional arguments of mamba_ssm's <c>mamba_chunk_scan_combined</c>, same names and defaults:
/// chunk_size, D, z, dt_bias, initial_states, dt_softplus, dt_limit.
/// </summary>
public sealed record SsdOptions
{
    /// <summary>Chunk length Q (16..256); the sequence length need not be a multiple of it.</summary>
    public int ChunkSize { get; init; } = 256;

    /// <summary>Skip connection, shape (h) or (h, p): y += D x.</summary>
    public Tensor? D { get; init; }

    /// <summary>Gate, shape (b, L, h, p): y *= silu(z).</summary>
    public Tensor? Z { get; init; }

    /// <summary>Added to dt before softplus, shape (h).</summary>
    public Tensor? DtBias { get; init; }

    /// <summary>State before the first position, shape (b, h, p, n); zero when absent.</summary>
    public Tensor? InitialStates { get; init; }

    /// <summary>dt = softplus(dt + dt_bias) (identity above 20, as mamba_ssm).</summary>
    public bool DtSoftplus { get; init; }

    /// <summary>dt is clamped to [min, max] after softplus; mamba_ssm's default (0, inf) also maps negative dt to 0.</summary>
    public (float Min, float Max) DtLimit { get; init; } = (0f, float.PositiveInfinity);
}
