namespace Mamba2.Model.Modules;

/// <summary>
/// mamba_ssm's <c>Mamba2</c> arguments and defaults (d_state 128, d_conv 4, expand 2, headdim 64, ngroups 1,
/// A_init_range (1, 16), dt_min 0.001, dt_max 0.1, dt_init_floor 1e-4, dt_limit (0, inf), chunk_size 256, bias false,
/// conv_bias true, rmsnorm true with eps 1e-5, norm_before_gate false, D_has_hdim false), plus <see cref="Causal"/>:
/// false makes the layer bidirectional (the sum form of the SSD, "same"-padded conv).
/// </summary>
public sealed record Mamba2Config(int DModel)
{
    public int DState { get; init; } = 128;

    public int DConv { get; init; } = 4;

    public int Expand { get; init; } = 2;

    public int HeadDim { get; init; } = 64;

    public int NGroups { get; init; } = 1;

    public (float Min, float Max) AInitRange { get; init; } = (1f, 16f);

    public float DtMin { get; init; } = 0.001f;

    public float DtMax { get; init; } = 0.1f;

    public float DtInitFloor { get; init; } = 1e-4f;

    public (float Min, float Max) DtLimit { get; init; } = (0f, float.PositiveInfinity);

    public int ChunkSize { get; init; } = 256;

    public bool Bias { get; init; }

    public bool ConvBias { get; init; } = true;

    public float NormEps { get; init; } = 1e-5f;

    public bool NormBeforeGate { get; init; }

    public bool DHasHdim { get; init; }

    /// <summary>
    /// The gated RMSNorm over groups of d_inner / ngroups features, as mamba_ssm's RMSNormGated(group_size) does (the
    /// default); false: over all of d_inner, as transformers' MambaRMSNormGated does. The same when ngroups is 1.
    /// </summary>
    public bool NormPerGroup { get; init; } = true;

    public bool Causal { get; init; } = true;

    public int DInner => Expand * DModel;

    public int NHeads => DInner / HeadDim;

    public int ConvDim => DInner + 2 * NGroups * DState;

    /// <summary>Features per gated-RMSNorm group (<see cref="NormPerGroup"/>).</summary>
    public int NormGroupSize => NormPerGroup ? DInner / NGroups : DInner;

    public int DInProj => 2 * DInner + 2 * NGroups * DState + NHeads;

    /// <summary>Throws, naming the field, when the sizes do not fit together.</summary>
    public void Validate()
    {
        if (DModel <= 0 || DState <= 0 || DConv <= 0 || Expand <= 0 || HeadDim <= 0 || NGroups <= 0)
        {
            throw new ArgumentException($"Mamba2Config: sizes must be positive (d_model {DModel}, d_state {DState}, d_conv {DConv}, expand {Expand}, headdim {HeadDim}, ngroups {NGroups}).");
        }

        if (DInner % HeadDim != 0)
        {
            throw new ArgumentException($"Mamba2Config: d_inner = expand * d_model = {DInner} must be a multiple of headdim {HeadDim}.", nameof(HeadDim));
        }

        if (NHeads % NGroups != 0)
        {
            throw new ArgumentException($"Mamba2Config: the number of heads ({NHeads}) must be a multiple of ngroups ({NGroups}).", nameof(NGroups));
        }
    }
}
