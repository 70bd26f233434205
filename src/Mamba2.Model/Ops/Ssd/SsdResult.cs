using Mamba2.Model.Tensors;

namespace Mamba2.Model.Ops.Ssd;

/// <summary>
/// What <see cref="SsdOp.Forward"/> produces: <see cref="Y"/> (b, L, h, p) and <see cref="FinalStates"/>
/// (b, h, p, n), plus the small intermediates the backward pass reuses. Disposing frees all of them.
/// </summary>
public sealed class SsdResult : IDisposable
{
    private readonly List<IDisposable> _owned;

    internal SsdResult(Tensor y, Tensor finalStates, Tensor dtOut, Tensor dACumsum, Tensor dACumsumLo, Tensor chunkStates, Tensor? yBeforeGate,
        SsdDirection direction = SsdDirection.Causal, SsdResult? reverseRun = null)
    {
        Direction = direction;
        ReverseRun = reverseRun;
        Y = y;
        FinalStates = finalStates;
        DtOut = dtOut;
        DACumsum = dACumsum;
        DACumsumLo = dACumsumLo;
        ChunkStates = chunkStates;
        YBeforeGate = yBeforeGate;
        _owned = [.. new[] { y, finalStates, dtOut, dACumsum, dACumsumLo, chunkStates, yBeforeGate }.OfType<Tensor>()];
        if (reverseRun is not null)
        {
            _owned.Add(reverseRun);
        }
    }

    /// <summary>A bidirectional result: the combined output over the two causal runs it came from (owned).</summary>
    internal SsdResult(Tensor y, Tensor? yBeforeGate, BidirectionalRuns runs)
        : this(y, runs.Forward.FinalStates, runs.Forward.DtOut, runs.Forward.DACumsum, runs.Forward.DACumsumLo, runs.Forward.ChunkStates, yBeforeGate)
    {
        Direction = runs.Direction;
        Bidirectional = runs;
        _owned = [y, runs, .. new[] { yBeforeGate }.OfType<Tensor>()];
    }

    public Tensor Y { get; }

    /// <summary>y before the z gate, (b, L, h, p), when z was given (mamba_ssm's out_x): the backward's dz needs it.</summary>
    public Tensor? YBeforeGate { get; }

    /// <summary>The final state of the (forward-direction) scan.</summary>
    public Tensor FinalStates { get; }

    /// <summary>dt after bias, softplus and clamp, (b, h, nchunks, Q); the forward direction's when bidirectional.</summary>
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

    /// <summary>
    /// The inputs and options of the forward that produced this result, which its backward reads again. Not owned:
    /// they must stay alive until <see cref="SsdOp.Backward"/> has been recorded.
    /// </summary>
    internal SsdInputs? Inputs { get; set; }

    /// <summary>The scans this result came from.</summary>
    public SsdDirection Direction { get; }

    /// <summary>The two causal runs a composed (naive) bidirectional result was combined from; null otherwise.</summary>
    internal BidirectionalRuns? Bidirectional { get; }

    /// <summary>
    /// A fused bidirectional result's reverse scan, as the mirrored causal run's intermediates (what the backward
    /// reads); its Y is this result's. Null otherwise.
    /// </summary>
    internal SsdResult? ReverseRun { get; }

    public void Dispose()
    {
        foreach (var d in _owned)
        {
            d.Dispose();
        }
    }
}

/// <summary>
/// The causal runs behind a composed bidirectional result: the forward scan, and the reverse scan as a mirrored
/// causal run on the same tensors (outputs at original positions; its intermediates in the mirrored walk's order).
/// </summary>
internal sealed record BidirectionalRuns(SsdDirection Direction, SsdResult Forward, SsdResult Reverse) : IDisposable
{
    public void Dispose()
    {
        Forward.Dispose();
        Reverse.Dispose();
    }
}

/// <summary>What a forward was called with: the backward takes them from its result instead of from its caller.</summary>
internal sealed record SsdInputs(Tensor X, Tensor Dt, Tensor A, Tensor B, Tensor C, SsdOptions Options);
