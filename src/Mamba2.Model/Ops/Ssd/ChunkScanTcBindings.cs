using Mamba2.Vulkan;

namespace Mamba2.Model.Ops.Ssd;

/// <summary>
/// tc/chunk_scan's twelve bindings (its causal variants, not BIDIR) in binding order: the tensor-core twin of
/// <see cref="ChunkScanBindings"/>, with C.B^T's scratch where the fp32 kernel reads B and dx's dD parts last.
/// <see cref="Forward"/> and <see cref="Dx"/> name every role, so a call cannot pass x where g belongs without saying so.
/// </summary>
internal readonly record struct ChunkScanTcBindings(
    BufferBinding X, BufferBinding C, BufferBinding Cb, BufferBinding States, BufferBinding DtOut, BufferBinding DACumsum,
    BufferBinding D, BufferBinding Z, BufferBinding Y, BufferBinding Aux, BufferBinding DACumsumLo, BufferBinding DdParts)
{
    /// <summary>y = C . states + masked (C.B^T) x + D x, gated by z; <paramref name="yBeforeGate"/> keeps y before the gate.</summary>
    public static ChunkScanTcBindings Forward(BufferBinding x, BufferBinding C, BufferBinding cb, BufferBinding states,
        BufferBinding dtOut, BufferBinding dACumsum, BufferBinding D, BufferBinding z, BufferBinding y, BufferBinding yBeforeGate,
        BufferBinding dACumsumLo) =>
        new(x, C, cb, states, dtOut, dACumsum, D, z, y, yBeforeGate, dACumsumLo, DdParts: yBeforeGate);   // not written forward

    /// <summary>
    /// The product backwards in time (REVERSE): dx from the gated output gradient <paramref name="g"/>, B where C is,
    /// the gradient of each chunk's outgoing state where the states are, the forward's <paramref name="x"/> where z
    /// is, dx where y is, the per-tile ddt parts where y before the gate is, and dD's first level
    /// (<paramref name="ddParts"/>, written with SSD_DD_PARTS).
    /// </summary>
    public static ChunkScanTcBindings Dx(BufferBinding g, BufferBinding B, BufferBinding cb, BufferBinding dStatesNext,
        BufferBinding dtOut, BufferBinding dACumsum, BufferBinding D, BufferBinding x, BufferBinding dx, BufferBinding ddtPart,
        BufferBinding dACumsumLo, BufferBinding ddParts) =>
        new(g, B, cb, dStatesNext, dtOut, dACumsum, D, x, dx, ddtPart, dACumsumLo, ddParts);

    public BufferBinding[] ToArray() => [X, C, Cb, States, DtOut, DACumsum, D, Z, Y, Aux, DACumsumLo, DdParts];
}
