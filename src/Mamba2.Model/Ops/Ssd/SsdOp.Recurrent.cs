using Mamba2.Model.Tensors;
using Mamba2.Vulkan;

namespace Mamba2.Model.Ops.Ssd;

/// <summary>
/// The recurrent path's forward (<see cref="SsdPath.Recurrent"/>): chunk_cumsum as on the tiled path, then one
/// sequential walk per state row (ssd_recurrent.comp) writing y, the states entering each chunk and the final
/// state, so that its result is interchangeable with the tiled path's.
/// </summary>
public static partial class SsdOp
{
    /// <summary>The recurrent forward's stages in order (profiling timestamps, as <see cref="Stages"/>).</summary>
    public static readonly IReadOnlyList<string> RecurrentStages = ["chunk_cumsum", "recurrent_scan"];

    /// <summary>The recurrent backward's stages in order (profiling timestamps, as <see cref="BackwardStages"/>).</summary>
    public static readonly IReadOnlyList<string> RecurrentBackwardStages =
        ["chunk_scan_bwd_dz", "recurrent_bwd_dx", "recurrent_bwd_state", "recurrent_bwd_dt", "recurrent_bwd_dbc", "reduce"];

    private static void RecordRecurrent(CommandStream st, SsdShape s, SsdRecurrentTiles t, Piece pc, Tensor x, Tensor dt, Tensor A, Tensor B,
        Tensor C, SsdOptions o, SsdResult r)
    {
        var device = x.Device;
        void Mark(string stage) => st.Section(stage);

        RecordCumsum(st, s, pc, dt, A, o, r.DtOut, r.DACumsum, r.DACumsumLo);
        Mark(RecurrentStages[0]);

        var (b, l, h, g, p, n, q, nc) = ((uint)pc.Count, (uint)s.SeqLen, (uint)s.Heads, (uint)s.Groups, (uint)s.HeadDim, (uint)s.DState, (uint)s.Chunk, (uint)s.Chunks);
        var flags = SsdFlagsExtensions.ForD(o.D) | SsdFlags.Z.If(o.Z is not null) | SsdFlags.InitialStates.If(o.InitialStates is not null)
            | SsdFlags.Mirrored.If(o.Mirrored);
        var scan = device.GetKernel(Shaders.SsdRecurrent, new SsdRecurrentSpec(t.Rows, t.NB, t.SG));
        var items = (long)b * h * ((p + t.Rows - 1) / t.Rows);
        st.Dispatch(scan, (Shaders.Groups(device, items), 1, 1), new ScanPush(b, l, h, g, p, n, q, nc, flags),
            pc.Of(x), pc.Of(B), pc.Of(C), pc.Of(r.DtOut), A.Buffer, (o.D ?? A).Buffer, pc.Of(o.Z ?? x), pc.Of(r.Y), pc.Of(r.YBeforeGate ?? r.Y),
            pc.Of(r.ChunkStates), pc.Of(o.InitialStates ?? r.FinalStates), pc.Of(r.FinalStates));
        Mark(RecurrentStages[1]);
    }
}
