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
        var New = scope.New;
        try
        {
            int b = s.Batch, h = s.Heads, q = s.Chunk;
            var y = New("y", b, s.SeqLen, h, s.HeadDim);
            var yPre = o.Z is null ? null : New("y_before_gate", b, s.SeqLen, h, s.HeadDim);
            var forward = new SsdResult(y, New("final_states", b, h, s.HeadDim, s.DState), New("dt_out", b, h, nc, q), New("dA_cumsum", b, h, nc, q),
                New("dA_cumsum_lo", b, h, nc, q), New("chunk_states", b, nc, h, s.HeadDim, s.DState), null);
            var reverse = new SsdResult(y, New("final_states_rev", b, h, s.HeadDim, s.DState), New("dt_out_rev", b, h, nc, q),
                New("dA_cumsum_rev", b, h, nc, q), New("dA_cumsum_rev_lo", b, h, nc, q), New("chunk_states_rev", b, nc, h, s.HeadDim, s.DState), null);
            var causal = CausalPart(o);
            var mirrored = causal with { Mirrored = true };
            var t = tiles.Bidir;
            Shaders.RunIn(device, stream, st =>
            {
                foreach (var pc in pieces)
                {
                    var runs = new[] { (Dt: dt, Options: causal, Run: forward), (Dt: o.DtRev ?? dt, Options: mirrored, Run: reverse) };
                    foreach (var (runDt, ro, r) in runs)
                    {
                        RecordCumsum(st, s, pc, runDt, A, ro, r.DtOut, r.DACumsum, r.DACumsumLo);
                    }

                    st.Section(Stages[0]);
                    foreach (var (_, ro, r) in runs)
                    {
                        RecordChunkState(st, s, default, pc, x, B, r.DtOut, r.DACumsum, r.DACumsumLo, r.ChunkStates, weights: 0, ro.Mirrored,
                            tc: tiles.State, operands: operands);
                    }

                    st.Section(Stages[1]);
                    foreach (var (_, ro, r) in runs)
                    {
                        RecordStatePassing(st, s, pc, r.ChunkStates, r.DACumsum, null, r.FinalStates, ro.Mirrored);
                    }

                    st.Section(Stages[2]);
                    var cb = RecordChunkCb(st, s, tiles.Scan, pc, B, C, causal, whole: true);
                    var (pb, l, hh, g, p, n, cq) = ((uint)pc.Count, (uint)s.SeqLen, (uint)h, (uint)s.Groups, (uint)s.HeadDim, (uint)s.DState, (uint)q);
                    var flags = SsdFlagsExtensions.ForD(o.D) | (o.Z is null ? SsdFlags.None : SsdFlags.Z | SsdFlags.SaveUngated);
                    var spec = t.ScanSpec(reverse: false, gShift: 0, shift: o.Direction == SsdDirection.BidirectionalShift);
                    st.Dispatch(device.GetKernel(Shaders.ChunkScanBidirTc(operands), spec),
                        (Shaders.Groups(device, t.Tiles(cq, p) * (uint)nc * pb * hh), 1, 1),
                        new ScanPush(pb, l, hh, g, p, n, cq, (uint)nc, flags),
                        pc.Of(x), pc.Of(C), cb, pc.Of(forward.ChunkStates), pc.Of(forward.DtOut), pc.Of(forward.DACumsum), (o.D ?? A).Buffer,
                        pc.Of(o.Z ?? x), pc.Of(y), pc.Of(yPre ?? y), pc.Of(forward.DACumsumLo),
                        pc.Of(reverse.ChunkStates), pc.Of(reverse.DtOut), pc.Of(reverse.DACumsum), pc.Of(reverse.DACumsumLo));
                    st.Section(Stages[3]);
                }
            });
            return new SsdResult(y, forward.FinalStates, forward.DtOut, forward.DACumsum, forward.DACumsumLo, forward.ChunkStates, yPre, o.Direction, reverse);
        }
        catch
        {
            scope.DisposeAll();
            throw;
        }
    }
}
