using System.Runtime.InteropServices;
using Mamba2.Model.Tensors;
using Mamba2.Vulkan;

namespace Mamba2.Model.Ops.Ssd;

/// <summary>
/// The recurrent path's backward (<see cref="SsdPath.Recurrent"/>): dx from a backward walk per state row, the
/// state-side products (dB, dC and the dt A gradient) from a backward walk per state column with sub-chunk
/// recomputation, then dt, A, dt_bias, dB and dC from those in fixed-order sums. Reads only what either path's
/// forward saved (dt_out and the states entering each chunk).
/// </summary>
public static partial class SsdOp
{
    [StructLayout(LayoutKind.Sequential)]
    private readonly record struct RecurrentDtPush(uint Batch, uint SeqLen, uint Heads, uint Groups, uint DState, uint Chunk, uint Chunks, SsdFlags Flags,
        float DtMin, float DtMax);

    [StructLayout(LayoutKind.Sequential)]
    private readonly record struct RecurrentDbcPush(uint Batch, uint SeqLen, uint Heads, uint Groups, uint DState, uint Chunk, uint Chunks, SsdFlags Flags);

    /// <summary>Intermediates of one recurrent backward call (G aliases dy without a gate); V, U, R are (b, L, h, n).</summary>
    private sealed record RecurrentScratch(Tensor G, Tensor V, Tensor U, Tensor R, Tensor DaPart, Tensor DbiasPart, Tensor? DdPart, int DdRows);

    private static SsdGradients BackwardRecurrent(Tensor dy, SsdResult saved, Tensor x, Tensor dt, Tensor A, Tensor B, Tensor C, SsdOptions o,
        SsdShape s, Tensor? dFinal, CommandStream? stream)
    {
        var device = x.Device;
        int b = s.Batch, l = s.SeqLen, h = s.Heads, p = s.HeadDim, g = s.Groups, n = s.DState, nc = s.Chunks, q = s.Chunk;
        var tiles = SsdRecurrentTiles.Choose(device.Capabilities, s);
        var ddRows = (l + ReduceBlockRows - 1) / ReduceBlockRows;
        long tokens = (long)l * h;
        var pieces = Shaders.Pieces(device, "Ssd backward", b,
            [tokens * p, tokens, (long)l * g * n, (long)h * p * n, (long)h * nc * q, (long)nc * h * p * n, tokens * n, (long)ddRows * h * p],
            OpTuning.Of(device).MaxBindingBytes).ToList();

        var scope = new TensorScope(device);
        var New = scope.New;
        try
        {
            var grads = NewGradients(scope, o, s);
            var gradCount = scope.Count;
            var scratch = new RecurrentScratch(
                G: o.Z is null ? dy : New("g", b, l, h, p),
                V: New("recurrent_v", b, l, h, n), U: New("recurrent_u", b, l, h, n), R: New("recurrent_r", b, l, h, n),
                DaPart: New("dA_part", b, h), DbiasPart: New("ddt_bias_part", b, h),
                DdPart: o.D is null ? null : New("dD_part", b, ddRows, h * p), ddRows);
            var temps = scope.Since(gradCount);
            Shaders.RunIn(device, stream, st =>
            {
                foreach (var t in temps)
                {
                    st.Own(t);
                }

                foreach (var pc in pieces)
                {
                    RecordBackwardRecurrent(st, s, tiles, pc, dy, saved, x, dt, A, B, C, o, dFinal, grads, scratch);
                }

                // Sums over the batch, in a fixed order.
                var rows = (uint)b;
                Reductions.Blocks(st, scratch.DaPart.Buffer, grads.DA.Buffer, 1, rows, (uint)h, 1, rows);
                if (grads.DDtBias is not null)
                {
                    Reductions.Blocks(st, scratch.DbiasPart.Buffer, grads.DDtBias.Buffer, 1, rows, (uint)h, 1, rows);
                }

                if (grads.DD is not null && scratch.DdPart is not null)
                {
                    ReduceDParts(st, scratch.DdPart.Buffer, grads.DD, (uint)(b * ddRows), (uint)h, (uint)p);
                }

                st.Section(RecurrentBackwardStages[^1]);
            });
            return grads;
        }
        catch
        {
            scope.DisposeAll();
            throw;
        }
    }

    private static void RecordBackwardRecurrent(CommandStream st, SsdShape s, SsdRecurrentTiles t, Piece pc, Tensor dy, SsdResult saved,
        Tensor x, Tensor dt, Tensor A, Tensor B, Tensor C, SsdOptions o, Tensor? dFinal, SsdGradients gr, RecurrentScratch sc)
    {
        var device = x.Device;
        void Mark(int stage) => st.Section(RecurrentBackwardStages[stage]);

        var (b, l, h, p, g, n, q, nc) = ((uint)pc.Count, (uint)s.SeqLen, (uint)s.Heads, (uint)s.HeadDim, (uint)s.Groups, (uint)s.DState, (uint)s.Chunk, (uint)s.Chunks);
        var local = Shaders.Local1D(device);

        // 1. The gate: g = dy silu(z) and dz (without z, g is dy).
        if (o.Z is not null && saved.YBeforeGate is not null && gr.Dz is not null)
        {
            var count = (long)b * l * h * p;
            st.Dispatch(device.GetKernel(Shaders.ChunkScanBwdDz, new LocalSize(local)), (Shaders.Groups1D(device, count, local), 1, 1), (uint)count,
                pc.Of(dy), pc.Of(o.Z), pc.Of(saved.YBeforeGate), pc.Of(sc.G), pc.Of(gr.Dz));
        }

        Mark(0);

        // 2. dx (with D g) and d initial_states: a backward walk per state row.
        var flags = SsdFlagsExtensions.ForD(o.D) | SsdFlags.DFinalStates.If(dFinal is not null) | SsdFlags.Mirrored.If(o.Mirrored)
            | SsdFlags.DInitialStates.If(gr.DInitialStates is not null);
        st.Dispatch(device.GetKernel(Shaders.SsdRecurrentBwdDx, new SsdRecurrentSpec(t.Rows, t.NB, t.SG)), (Shaders.Groups(device, (long)b * h * ((p + t.Rows - 1) / t.Rows)), 1, 1),
            new ScanPush(b, l, h, g, p, n, q, nc, flags),
            pc.Of(sc.G), pc.Of(B), pc.Of(C), pc.Of(saved.DtOut), A.Buffer, (o.D ?? A).Buffer, pc.Of(dFinal ?? saved.FinalStates), pc.Of(gr.Dx),
            pc.Of(gr.DInitialStates ?? saved.FinalStates));
        Mark(1);

        // 3. The state-side products V, U, R: a backward walk per state column.
        st.Dispatch(device.GetKernel(Shaders.SsdRecurrentBwdState, new SsdRecurrentBwdStateSpec(t.Columns, t.PB, t.K, t.KC, t.SG)),
            (Shaders.Groups(device, (long)b * h * ((n + t.Columns - 1) / t.Columns)), 1, 1),
            new ScanPush(b, l, h, g, p, n, q, nc, SsdFlags.DFinalStates.If(dFinal is not null) | SsdFlags.Mirrored.If(o.Mirrored)),
            pc.Of(x), pc.Of(sc.G), pc.Of(B), pc.Of(C), pc.Of(saved.DtOut), A.Buffer, pc.Of(saved.ChunkStates), pc.Of(dFinal ?? saved.FinalStates),
            pc.Of(sc.V), pc.Of(sc.U), pc.Of(sc.R));
        Mark(2);

        // 4. dt (through clamp, softplus and bias) and the per-batch parts of dA and dt_bias.
        var dtFlags = SsdFlags.DtBias.If(o.DtBias is not null) | SsdFlags.DtSoftplus.If(o.DtSoftplus) | SsdFlags.Mirrored.If(o.Mirrored);
        st.Dispatch(device.GetKernel(Shaders.SsdRecurrentBwdDt, new LocalSize(local)), (Shaders.Groups1D(device, (long)b * h, local), 1, 1),
            new RecurrentDtPush(b, l, h, g, n, q, nc, dtFlags, o.DtLimit.Min, o.DtLimit.Max),
            pc.Of(dt), A.Buffer, (o.DtBias ?? A).Buffer, pc.Of(saved.DtOut), pc.Of(B), pc.Of(sc.U), pc.Of(sc.R), pc.Of(gr.Ddt),
            pc.Of(sc.DaPart), pc.Of(sc.DbiasPart));
        Mark(3);

        // 5. dB and dC: the heads of each group summed.
        st.Dispatch(device.GetKernel(Shaders.SsdRecurrentBwdDbc, new LocalSize(local)), (Shaders.Groups1D(device, (long)b * l * g * n, local), 1, 1),
            new RecurrentDbcPush(b, l, h, g, n, q, nc, SsdFlags.Mirrored.If(o.Mirrored)), pc.Of(sc.V), pc.Of(sc.U), pc.Of(saved.DtOut), pc.Of(gr.DB), pc.Of(gr.DC));
        Mark(4);

        // 6. dD, first level: sum of g x over blocks of positions.
        if (sc.DdPart is not null)
        {
            Reductions.Blocks(st, pc.Of(sc.G), pc.Of(sc.DdPart), b, l, h * p, 1, ReduceBlockRows, pc.Of(x));
        }
    }
}
