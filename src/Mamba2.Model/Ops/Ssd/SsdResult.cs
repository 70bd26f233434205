using Mamba2.Model.Tensors;

namespace Mamba2.Model.Ops.Ssd;

/// <summary>
/// What <see cref="SsdOp.Forward"/> produces: <see cref="Y"/> (b, L, h, p) and <see cref="FinalStates"/>
/// (b, h, p, n), plus the small intermediates the backward pass reuses. Disposing frees all of them.
/// </summary>
public sealed class SsdResult : IDisposable
{
    internal SsdResult(Tensor y, Tensor finalStates, Tensor dtOut, Tensor dACumsum, Tensor dACumsumLo, Tensor chunkStates, Tensor? yBeforeGate)
    {
        DACumsumLo = dACumsumLo;
        YBeforeGate = yBeforeGate;
        Y = y;
        FinalStates = finalStates;
        DtOut = dtOut;
        DACumsum = dACumsum;
        ChunkStates = chunkStates;
    }

    public Tensor Y { get; }

    /// <summary>y before the z gate, (b, L, h, p), when z was given (mamba_ssm's out_x): the backward's dz needs it.</summary>
    public Tensor? YBeforeGate { get; }

    public Tensor FinalStates { get; }

    /// <summary>dt after bias, softplus and clamp, (b, h, nchunks, Q).</summary>
    public Tensor DtOut { get; }

    /// <summary>Within-chunk cumulative sum of dt * A, (b, h, nchunks, Q).</summary>
    public Tensor DACumsum { get; }

    /// <summary>
    /// The low part of <see cref="DACumsum"/> (the cumsum is kept as hi + lo so that differences of nearby positions
    /// stay accurate when the cumsum itself is large).
    /// </summary>
    public Tensor DACumsumLo { get; }

    /// <summary>The state entering each chunk, (b, nchunks, h, p, n): the only intermediate that grows with p x n.</summary>
    public Tensor ChunkStates { get; }

    public void Dispose()
    {
        Y.Dispose();
        FinalStates.Dispose();
        DtOut.Dispose();
        DACumsum.Dispose();
        DACumsumLo.Dispose();
        ChunkStates.Dispose();
        YBeforeGate?.Dispose();
    }
}
