using Mamba2.Vulkan;

namespace Mamba2.Model.Ops.Ssd;

/// <summary>
/// chunk_scan's eleven bindings in binding order. The kernel runs forward (y) or backwards in time (REVERSE, the
/// backward's dx), and the backward reads the same bindings under other roles (docs/DESIGN.md, "chunk_scan run
/// backwards"): <see cref="Forward"/> and <see cref="Dx"/> name every role, so a call cannot swap B and C or pass
/// x where g belongs without saying so.
/// </summary>
internal readonly record struct ChunkScanBindings(
    BufferBinding X, BufferBinding C, BufferBinding B, BufferBinding States, BufferBinding DtOut, BufferBinding DACumsum,
    BufferBinding D, BufferBinding Z, BufferBinding Y, BufferBinding Aux, BufferBinding DACumsumLo)
{
    /// <summary>y = C . states + masked (C.B^T) x + D x, gated by z; <paramref name="yBeforeGate"/> keeps y before the gate.</summary>
    public static ChunkScanBindings Forward(BufferBinding x, BufferBinding C, BufferBinding B, BufferBinding states,
        BufferBinding dtOut, BufferBinding dACumsum, BufferBinding D, BufferBinding z, BufferBinding y, BufferBinding yBeforeGate,
        BufferBinding dACumsumLo) =>
        new(x, C, B, states, dtOut, dACumsum, D, z, y, yBeforeGate, dACumsumLo);

    /// <summary>
    /// The same product backwards in time: dx from the gated output gradient <paramref name="g"/> (read where x is),
    /// B and C swapped, the gradient of each chunk's outgoing state where the states are, the forward's
    /// <paramref name="x"/> where z is (for ddt), dx where y is and the per-tile ddt parts where y before the gate is.
    /// </summary>
    public static ChunkScanBindings Dx(BufferBinding g, BufferBinding B, BufferBinding C, BufferBinding dStatesNext,
        BufferBinding dtOut, BufferBinding dACumsum, BufferBinding D, BufferBinding x, BufferBinding dx, BufferBinding ddtPart,
        BufferBinding dACumsumLo) =>
        new(g, B, C, dStatesNext, dtOut, dACumsum, D, x, dx, ddtPart, dACumsumLo);

    public BufferBinding[] ToArray() => [X, C, B, States, DtOut, DACumsum, D, Z, Y, Aux, DACumsumLo];
}
