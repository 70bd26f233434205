using Mamba2.Model.Tensors;
using Mamba2.Vulkan;

namespace Mamba2.Model.Ops.Ssd;

/// <summary>
/// The fused bidirectional forward on tensor cores, both forms where the scans share B and C (the reverse scan may have
/// its own dt). Each scan's chunk_cumsum, chunk_state and state_passing as in a causal run (the reverse one
/// mirrored), C.B^T once with every tile, then one tc/chunk_scan pass (its BIDIR variant; SHIFT for Hydra's form)
/// that adds both state terms and both triangles of the intra-chunk term: one output tensor, no second causal output
/// and no combine pass.
/// </summary>
public static partial class SsdOp
{
    /// <summary>Why the tensor-core fused pass cannot take these options (the composition can), or null when it can.</summary>
    internal static string? WhyNotFusedTensorCores(SsdOptions o) =>
        o.BRev is not null || o.CRev is not null ? "takes scans that share B and C (B_rev and C_rev compose two causal runs)"
        : o.D is { Rank: 3 } ? "takes D of shape (h) or (h, p) (D of shape (b, L, h) composes two causal runs)"
        : null;

    private static SsdResult ForwardBidirectionalFusedTensorCores(Tensor x, Tensor dt, Tensor A, Tensor B, Tensor C, SsdOptions o, SsdShape s,
        CommandStream? stream)
    {
        var device = x.Device;
        var tiles = TensorCoreTilesFor(device, o.Precision, s);
        var operands = o.Precision.Operands(device);
        var nc = s.Chunks;
        var pieces = ForwardPieces(device, s, (long)nc * s.Groups * s.Chunk * s.Chunk);   // C.B^T, whole

        var scope = new TensorScope(device);
        try
        {
            var f = NewFusedScans(scope, s, o);
            var (y, yPre, forward, reverse) = (f.Y, f.YBeforeGate, f.Forward, f.Reverse);
            var t = tiles.Bidir;
            Shaders.RunIn(device, stream, st =>
            {
                var products = st.Own(new ScratchPool(device));   // C.B^T, each piece's in turn
                foreach (var pc in pieces)
                {
                    RecordFusedScans(st, s, pc, x, dt, A, B, o, f, default, tiles.State, operands, sections: true);
                    var cb = RecordChunkCb(st, s, tiles.Scan, pc, B, C, CausalPart(o), products, whole: true);
                    var (pb, l, hh, g, p, n, cq) = ((uint)pc.Count, (uint)s.SeqLen, (uint)s.Heads, (uint)s.Groups, (uint)s.HeadDim, (uint)s.DState, (uint)s.Chunk);
                    var flags = SsdFlagsExtensions.ForD(o.D) | (o.Z is null ? SsdFlags.None : SsdFlags.Z | SsdFlags.SaveUngated);
                    var spec = t.ScanSpec(reverse: false, gShift: 0, shift: o.Direction == SsdDirection.BidirectionalShift, gated: flags.HasFlag(SsdFlags.Z));
                    var bf16 = s.Bf16Tensors;   // x, C, z, y and y before the gate
                    st.Dispatch(device.GetKernel(Shaders.ChunkScanBidirTc(operands, bf16), spec),
                        (Shaders.Groups(device, t.Tiles(cq, p) * (uint)nc * pb * hh), 1, 1),
                        new ScanPush(pb, l, hh, g, p, n, cq, (uint)nc, flags),
                        pc.Of(x, bf16), pc.Of(C, bf16), cb, pc.Of(forward.ChunkStates), pc.Of(forward.DtOut), pc.Of(forward.DACumsum), (o.D ?? A).Buffer,
                        pc.Of(o.Z ?? x, bf16), pc.Of(y, bf16), pc.Of(yPre ?? y, bf16), pc.Of(forward.DACumsumLo),
                        pc.Of(reverse.ChunkStates), pc.Of(reverse.DtOut), pc.Of(reverse.DACumsum), pc.Of(reverse.DACumsumLo));
                    st.Section(Stages[3]);
                }
            });
            return f.Result(o.Direction);
        }
        catch
        {
            scope.DisposeAll();
            throw;
        }
    }
}
