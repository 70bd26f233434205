using System.Runtime.InteropServices;
using Mamba2.Model.Tensors;
using Mamba2.Vulkan;

namespace Mamba2.Model.Ops.Ssd;

/// <summary>
/// The bidirectional forms: the fused forward (one output pass over both scans), and the composition of two causal
/// runs, the second a mirrored run (the reverse scan on the original tensors), shifted one step each in the Hydra
/// form and combined with D x and the gate. The backward composes the causal backward the same way; where both
/// scans share dt, B and C (tiled path) the reverse run adds into the forward run's gradients and borrows its
/// scratch, so training needs little more memory than the causal op; otherwise the runs keep gradients of their own,
/// but on the tiled path still take their intermediates from one scratch pool in turn.
/// </summary>
public static partial class SsdOp
{
    [StructLayout(LayoutKind.Sequential)]
    private readonly record struct CombinePush(uint Batch, uint SeqLen, uint Heads, uint HeadDim, uint Shift, SsdFlags Flags);

    /// <summary>The options of each causal run inside a bidirectional one: no D, gate or reverse tensors.</summary>
    private static SsdOptions CausalPart(SsdOptions o) =>
        o with { Direction = SsdDirection.Causal, D = null, Z = null, InitialStates = null, DtRev = null, BRev = null, CRev = null };

    /// <summary>
    /// On a profiling stream the in-place bidirectional backward (tiled path, dt, B and C shared) marks each causal
    /// run's <see cref="BackwardStages"/> in a section scope of one of these names: the forward scan's run, then the
    /// mirrored one's.
    /// </summary>
    public static readonly IReadOnlyList<string> BidirectionalRuns = ["fwd", "rev"];

    private static int Shift(SsdOptions o) => o.Direction == SsdDirection.BidirectionalShift ? 1 : 0;

    /// <summary>
    /// The fused forward: chunk_cumsum, chunk_state and state_passing for each direction (the reverse ones as a
    /// mirrored causal run on the same tensors), then one chunk_scan_bidir pass over both scans (in the tensor-core
    /// modes SsdOp.BidirectionalTensorCores.cs).
    /// </summary>
    private static SsdResult ForwardBidirectionalFused(Tensor x, Tensor dt, Tensor A, Tensor B, Tensor C, SsdOptions o, SsdShape s,
        CommandStream? stream)
    {
        if (o.Precision != Precision.Fp32)
        {
            return ForwardBidirectionalFusedTensorCores(x, dt, A, B, C, o, s, stream);
        }

        var device = x.Device;
        var shared = o.Direction == SsdDirection.BidirectionalSum && o.BRev is null && o.CRev is null;
        var tuning = OpTuning.Of(device);
        var tiles = SsdTiles.Choose(device.Capabilities, s, tuning.ScanTile);
        var bt = SsdBidirectionalTiles.Choose(device.Capabilities, s, shared, tuning.BidirTile);
        var nc = s.Chunks;
        var pieces = ForwardPieces(device, s, (long)s.SeqLen * s.Heads);   // D (b, L, h)

        var scope = new TensorScope(device);
        try
        {
            var f = NewFusedScans(scope, s, o);
            var (y, yPre, forward, reverse) = (f.Y, f.YBeforeGate, f.Forward, f.Reverse);
            var dFlags = SsdFlagsExtensions.ForD(o.D);
            Shaders.RunIn(device, stream, st =>
            {
                foreach (var pc in pieces)
                {
                    RecordFusedScans(st, s, pc, x, dt, A, B, o, f, tiles, tc: null, GemmOperands.F16, sections: false);

                    var (cb, l, hh, g, p, n, cq) = ((uint)pc.Count, (uint)s.SeqLen, (uint)s.Heads, (uint)s.Groups, (uint)s.HeadDim, (uint)s.DState, (uint)s.Chunk);
                    var kernel = device.GetKernel(Shaders.ChunkScanBidir, new ChunkScanBidirSpec(bt.BM, bt.BN, bt.BK, bt.NK, bt.HB, Shift(o) != 0, bt.Shared != 0));
                    var items = (long)((cq + bt.BM - 1) / bt.BM) * ((p + bt.BN - 1) / bt.BN) * (uint)nc * cb * (hh / bt.HB);
                    st.Dispatch(kernel, (Shaders.Groups(device, items), 1, 1),
                        new ScanPush(cb, l, hh, g, p, n, cq, (uint)nc, dFlags | SsdFlags.Z.If(o.Z is not null)),
                        pc.Of(x), pc.Of(C), pc.Of(B), pc.Of(o.CRev ?? C), pc.Of(o.BRev ?? B), pc.Of(forward.ChunkStates), pc.Of(reverse.ChunkStates),
                        pc.Of(forward.DtOut), pc.Of(forward.DACumsum), pc.Of(forward.DACumsumLo), pc.Of(reverse.DtOut), pc.Of(reverse.DACumsum),
                        pc.Of(reverse.DACumsumLo), o.D is { Rank: 3 } ? pc.Of(o.D) : (o.D ?? A).Buffer, pc.Of(o.Z ?? x), pc.Of(y), pc.Of(yPre ?? y));
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

    /// <summary>
    /// What a fused forward writes: its output (and y before the gate), and each scan's intermediates, the reverse
    /// scan's as a mirrored causal run's first three stages (what the output pass and the backward read). Both runs'
    /// Y is the output.
    /// </summary>
    private sealed record FusedScans(Tensor Y, Tensor? YBeforeGate, SsdResult Forward, SsdResult Reverse)
    {
        public SsdResult Result(SsdDirection direction) =>
            new(Y, Forward.FinalStates, Forward.DtOut, Forward.DACumsum, Forward.DACumsumLo, Forward.ChunkStates, YBeforeGate, direction, Reverse);
    }

    private static FusedScans NewFusedScans(TensorScope scope, SsdShape s, SsdOptions o)
    {
        var New = scope.New;
        int b = s.Batch, h = s.Heads, p = s.HeadDim, n = s.DState, q = s.Chunk, nc = s.Chunks;
        var y = scope.NewOf(s.TensorType, "y", b, s.SeqLen, h, p);
        var yPre = o.Z is null ? null : scope.NewOf(s.TensorType, "y_before_gate", b, s.SeqLen, h, p);
        SsdResult Run(string suffix) => new(y, New("final_states" + suffix, b, h, p, n), New("dt_out" + suffix, b, h, nc, q),
            New("dA_cumsum" + suffix, b, h, nc, q), New("dA_cumsum" + suffix + "_lo", b, h, nc, q), New("chunk_states" + suffix, b, nc, h, p, n), null);
        return new FusedScans(y, yPre, Run(""), Run("_rev"));
    }

    /// <summary>
    /// A fused forward's first three stages for one piece, each for both scans (the reverse one a mirrored causal run
    /// with its own dt and B where given): chunk_cumsum, chunk_state (on tensor cores at <paramref name="tc"/> when
    /// given), state_passing; with <paramref name="sections"/> each marked as its stage.
    /// </summary>
    private static void RecordFusedScans(CommandStream st, SsdShape s, Piece pc, Tensor x, Tensor dt, Tensor A, Tensor B, SsdOptions o, FusedScans f,
        SsdTiles tiles, SsdTensorCoreTile? tc, GemmOperands operands, bool sections)
    {
        var causal = CausalPart(o);
        (Tensor Dt, Tensor B, bool Mirrored, SsdResult Run)[] runs = [(dt, B, false, f.Forward), (o.DtRev ?? dt, o.BRev ?? B, true, f.Reverse)];
        void Mark(int stage)
        {
            if (sections)
            {
                st.Section(Stages[stage]);
            }
        }

        foreach (var (runDt, _, mirrored, r) in runs)
        {
            RecordCumsum(st, s, pc, runDt, A, causal with { Mirrored = mirrored }, r.DtOut, r.DACumsum, r.DACumsumLo);
        }

        Mark(0);
        foreach (var (_, runB, mirrored, r) in runs)
        {
            RecordChunkState(st, s, tiles, pc, x, runB, r.DtOut, r.DACumsum, r.DACumsumLo, r.ChunkStates, weights: 0, mirrored, tc: tc, operands: operands);
        }

        Mark(1);
        foreach (var (_, _, mirrored, r) in runs)
        {
            RecordStatePassing(st, s, pc, r.ChunkStates, r.DACumsum, null, r.FinalStates, mirrored);
        }

        Mark(2);
    }

    /// <summary>The naive composition: the forward scan and a mirrored causal run, combined with D x and the gate.</summary>
    private static SsdResult ForwardBidirectionalComposed(Tensor x, Tensor dt, Tensor A, Tensor B, Tensor C, SsdOptions o, SsdShape s,
        CommandStream? stream)
    {
        var device = x.Device;
        var scope = new TensorScope(device);
        SsdResult? fwd = null, rev = null;
        try
        {
            SsdResult? result = null;
            Shaders.RunIn(device, stream, st =>
            {
                var products = st.Own(new ScratchPool(device));   // C.B^T, each run's in turn
                using (st.SectionScope(BidirectionalRuns[0]))
                {
                    fwd = ForwardUnsaved(x, dt, A, B, C, CausalPart(o), st, products);
                }

                using (st.SectionScope(BidirectionalRuns[1]))
                {
                    rev = ForwardUnsaved(x, o.DtRev ?? dt, A, o.BRev ?? B, o.CRev ?? C, CausalPart(o) with { Mirrored = true }, st, products);
                }

                var y = scope.NewOf(s.TensorType, "y", s.Batch, s.SeqLen, s.Heads, s.HeadDim);
                var yPre = o.Z is null ? null : scope.NewOf(s.TensorType, "y_before_gate", s.Batch, s.SeqLen, s.Heads, s.HeadDim);
                Combine(st, s, fwd.Y, rev.Y, x, o.D, o.Z, y, yPre, (uint)Shift(o));
                result = new SsdResult(y, yPre, new BidirectionalRuns(o.Direction, fwd, rev));
            });
            return result!;
        }
        catch
        {
            fwd?.Dispose();
            rev?.Dispose();
            scope.DisposeAll();
            throw;
        }
    }

    private static SsdGradients BackwardBidirectional(Tensor dy, SsdResult saved, Tensor x, Tensor dt, Tensor A, Tensor B, Tensor C,
        SsdOptions o, SsdShape s, Tensor? dFinalStates, CommandStream? stream)
    {
        const string op = "Ssd backward";
        if (saved.Direction != o.Direction)
        {
            throw new ArgumentException(
                $"{op}: saved comes from a {saved.Direction} forward but the options are {o.Direction}; pass the result of the same call.", nameof(saved));
        }

        if (o.Z is not null && saved.YBeforeGate is null)
        {
            throw new ArgumentException($"{op}: z is given but saved has no y before the gate (it came from a forward without z).", nameof(saved));
        }

        var device = x.Device;
        var scope = new TensorScope(device);
        var New = scope.New;
        SsdGradients? fwd = null;

        try
        {
            int b = s.Batch, l = s.SeqLen, h = s.Heads, p = s.HeadDim, g = s.Groups, n = s.DState;
            var causal = CausalPart(o);
            var mirrored = causal with { Mirrored = true };
            // The common case, both scans reading the same dt, B and C on the tiled path: the reverse run adds its
            // gradients to the forward run's and both share one set of scratch, so the backward needs little more
            // memory than a causal one. Otherwise each run has its own gradients, summed or kept apart after.
            var inPlace = o.DtRev is null && o.BRev is null && o.CRev is null && PathOn(device, o) == SsdPath.Tiled;
            // Sum form with D (h) or (h, p) in place: g is the same for both runs and for the skip term, so the forward
            // run's dx epilogue adds D g and its dD is the skip's: no separate pass or buffer for them. (The forward
            // run, not the reverse: the reverse one adds into dx and holds dx's old values meanwhile.)
            var foldD = inPlace && Shift(o) == 0 && o.D is { Rank: <= 2 };
            var dD = o.D is null || foldD ? null : New("dD", [.. o.D.Shape]);
            var dz = o.Z is null ? null : scope.NewOf(s.TensorType, "dz", b, l, h, p);
            var bf16 = s.Bf16Tensors;
            var grads = inPlace ? null : new SsdGradients(
                New("dx", b, l, h, p), New("ddt", b, l, h), New("dA", h), New("dB", b, l, g, n), New("dC", b, l, g, n), dD, dz,
                o.DtBias is null ? null : New("ddt_bias", h),
                null,
                o.DtRev is null ? null : New("ddt_rev", b, l, h),
                o.BRev is null ? null : New("dB_rev", b, l, g, n),
                o.CRev is null ? null : New("dC_rev", b, l, g, n));
            Shaders.RunIn(device, stream, st =>
            {
                // The gate, then the upstream gradient of each causal run: g moved to where that run wrote. On bf16
                // tensors dy is read as bf16 (rounded once where it came as fp32).
                var dyIn = dy.DType == s.TensorType ? dy : st.Own(Cast.To(dy, s.TensorType, st));
                var gate = o.Z is null ? dyIn : st.Own(Tensor.Empty(device, "g", s.TensorType, b, l, h, p));
                if (o.Z is not null && saved.YBeforeGate is not null && dz is not null)
                {
                    var local = Shaders.Local1D(device);
                    BufferBinding All(Tensor t) => Shaders.Slice(t, 0, t.Length, bf16);
                    st.Dispatch(device.GetKernel(bf16 ? Shaders.ChunkScanBwdDzBf16 : Shaders.ChunkScanBwdDz, new LocalSize(local)),
                        (Shaders.Groups1D(device, gate.Length, local), 1, 1),
                        (uint)gate.Length, All(dyIn), All(o.Z), All(saved.YBeforeGate), All(gate), All(dz));
                }

                // Each scan's output moved by the shift; its upstream gradient moves back: g_fwd[t] = g[t + shift],
                // g_rev[t] = g[t - shift].
                var shift = Shift(o);
                // The backward composes the causal backward: a fused forward's intermediates are exactly the forward
                // scan's and the mirrored reverse run's.
                var runs = saved.Bidirectional ?? new BidirectionalRuns(o.Direction, ForwardScanOf(saved), saved.ReverseRun!);
                if (inPlace)
                {
                    var cs = SsdShape.Validate(x, dt, A, B, C, causal);
                    var pool = st.Own(new ScratchPool(device));
                    // The shift form's runs read g one step away in place (g_fwd[t] = g[t + 1], g_rev[t] = g[t - 1]).
                    using (st.SectionScope(BidirectionalRuns[0]))
                    {
                        fwd = BackwardTiled(gate, runs.Forward, x, dt, A, B, C, foldD ? causal with { D = o.D } : causal, cs, dFinalStates, st, null, pool, shift);
                    }

                    var into = new SsdGradients(fwd.Dx, fwd.Ddt, fwd.DA, fwd.DB, fwd.DC, null, null, fwd.DDtBias, null);
                    using (st.SectionScope(BidirectionalRuns[1]))
                    {
                        BackwardTiled(gate, runs.Reverse, x, dt, A, B, C, mirrored, cs, null, st, into, pool, -shift);
                    }

                    grads = new SsdGradients(fwd.Dx, fwd.Ddt, fwd.DA, fwd.DB, fwd.DC, foldD ? fwd.DD : dD, dz, fwd.DDtBias, null);
                }
                else
                {
                    var (dtRev, bRev, cRev) = (o.DtRev ?? dt, o.BRev ?? B, o.CRev ?? C);
                    var gFwd = shift == 0 ? gate : st.Own(Sequence.Shifted(st, gate, "g_fwd", shift, "Ssd", OpTuning.Of(device).MaxBindingBytes));
                    var gRev = shift == 0 ? gate : st.Own(Sequence.Shifted(st, gate, "g_rev", -shift, "Ssd", OpTuning.Of(device).MaxBindingBytes));
                    // On the tiled path the two runs take their intermediates from one pool in turn.
                    var pool = PathOn(device, o) == SsdPath.Tiled ? st.Own(new ScratchPool(device)) : null;
                    SsdGradients Run(Tensor g, SsdResult run, Tensor runDt, Tensor runB, Tensor runC, SsdOptions ro, Tensor? dFinal) =>
                        st.Own(pool is null
                            ? Backward(g, run, x, runDt, A, runB, runC, ro, dFinal, st)
                            : BackwardTiled(g, run, x, runDt, A, runB, runC, ro, SsdShape.Validate(x, runDt, A, runB, runC, ro), dFinal, st, null, pool, 0));
                    SsdGradients f, rev;
                    using (st.SectionScope(BidirectionalRuns[0]))
                    {
                        f = Run(gFwd, runs.Forward, dt, B, C, causal, dFinalStates);
                    }

                    using (st.SectionScope(BidirectionalRuns[1]))
                    {
                        rev = Run(gRev, runs.Reverse, dtRev, bRev, cRev, mirrored, null);
                    }

                    // Inputs both scans read get both gradients (the mirrored run's are at original positions already).
                    Elementwise.Add(f.Dx, rev.Dx, grads!.Dx, st);
                    Sum(st, f.Ddt, rev.Ddt, grads.Ddt, grads.DDtRev);
                    Sum(st, f.DB, rev.DB, grads.DB, grads.DBRev);
                    Sum(st, f.DC, rev.DC, grads.DC, grads.DCRev);
                    Elementwise.Add(f.DA, rev.DA, grads.DA, st);
                    if (grads.DDtBias is not null)
                    {
                        Elementwise.Add(f.DDtBias!, rev.DDtBias!, grads.DDtBias, st);
                    }
                }

                if (o.D is not null && dD is not null && !foldD)
                {
                    AddSkipGradients(st, o.D, gate, x, grads!.Dx, dD, s);
                }
            });
            return grads!;
        }
        catch
        {
            fwd?.Dispose();
            scope.DisposeAll();
            throw;
        }
    }

    /// <summary>A fused result's forward scan as a causal run's result: a view of its tensors, not owned (never disposed).</summary>
    private static SsdResult ForwardScanOf(SsdResult saved) =>
        new(saved.Y, saved.FinalStates, saved.DtOut, saved.DACumsum, saved.DACumsumLo, saved.ChunkStates, null);

    /// <summary>
    /// d/dD and the skip connection's share of dx: dx += D g, dD = sum of g x over the batch and positions (and the
    /// head dimension for D (h)); for D (b, L, h), over the head dimension only. Fixed-order sums.
    /// </summary>
    private static void AddSkipGradients(CommandStream st, Tensor D, Tensor gate, Tensor x, Tensor dx, Tensor dD, SsdShape s)
    {
        var device = x.Device;
        uint l = (uint)s.SeqLen, h = (uint)s.Heads, p = (uint)s.HeadDim;
        // dx += D g: a combine of the skip term alone (a shift of L moves both scan terms out of range), added in place.
        Combine(st, s, gate, gate, gate, D, null, dx, null, l, accumulate: true);

        var blocks = (l + ReduceBlockRows - 1) / ReduceBlockRows;
        var part = D.Rank == 3 ? null : st.Own(Tensor.Empty(device, "dD_part", s.Batch, (int)blocks, s.Heads * s.HeadDim));
        var bf16 = x.DType == TensorDType.BF16;   // gate and x
        var perBatch = (long)s.SeqLen * s.Heads * s.HeadDim;
        foreach (var pc in Pieces(device, s.Batch, [perBatch, (long)s.SeqLen * s.Heads, (long)blocks * s.Heads * s.HeadDim], bf16 ? perBatch : null))
        {
            var n = (uint)pc.Count;
            if (part is null)
            {
                Reductions.Blocks(st, pc.Of(gate, bf16), pc.Of(dD), 1, 1, n * l * h, p, 1, pc.Of(x, bf16), bf16Inputs: bf16);   // D (b, L, h): per row
            }
            else
            {
                Reductions.Blocks(st, pc.Of(gate, bf16), pc.Of(part), n, l, h * p, 1, ReduceBlockRows, pc.Of(x, bf16), bf16Inputs: bf16);
            }
        }

        if (part is not null)
        {
            ReduceDParts(st, part.Buffer, dD, (uint)s.Batch * blocks, h, p);
        }
    }

    /// <summary>Gradients of a tensor both scans read (summed), or of the reverse scan's own tensor (kept apart).</summary>
    private static void Sum(CommandStream st, Tensor fromForward, Tensor fromReverse, Tensor shared, Tensor? reverseOwn)
    {
        if (reverseOwn is null)
        {
            Elementwise.Add(fromForward, fromReverse, shared, st);
            return;
        }

        st.Copy(fromForward.Buffer, 0, shared.Buffer, 0, shared.Buffer.SizeBytes);
        st.Copy(fromReverse.Buffer, 0, reverseOwn.Buffer, 0, reverseOwn.Buffer.SizeBytes);
    }

    /// <summary>
    /// y = (y_fwd[t - shift] + y_rev[t + shift] + D x) * silu(z) (bidir_combine.comp; y_rev at original positions),
    /// or y += that with <paramref name="accumulate"/>, a batch slice at a time.
    /// </summary>
    private static void Combine(CommandStream st, SsdShape s, Tensor yFwd, Tensor yRev, Tensor x, Tensor? D, Tensor? z, Tensor y, Tensor? yPre, uint shift,
        bool accumulate = false)
    {
        var device = x.Device;
        var dFlags = SsdFlagsExtensions.ForD(D);
        var local = Shaders.Local1D(device);
        var perBatch = (long)s.SeqLen * s.Heads * s.HeadDim;
        var bf16 = x.DType == TensorDType.BF16;   // every tensor but D
        foreach (var pc in Pieces(device, s.Batch, [perBatch, (long)s.SeqLen * s.Heads], bf16 ? perBatch : null))
        {
            st.Dispatch(device.GetKernel(bf16 ? Shaders.BidirCombineBf16 : Shaders.BidirCombine, new LocalSize(local)), (Shaders.Groups1D(device, pc.Count * perBatch, local), 1, 1),
                new CombinePush((uint)pc.Count, (uint)s.SeqLen, (uint)s.Heads, (uint)s.HeadDim, shift, dFlags | SsdFlags.Z.If(z is not null) | SsdFlags.Accumulate.If(accumulate)),
                pc.Of(yFwd, bf16), pc.Of(yRev, bf16), pc.Of(x, bf16), D is { Rank: 3 } ? pc.Of(D) : D?.Buffer ?? new BufferBinding(x.Storage, 0, x.SizeBytes), pc.Of(z ?? x, bf16), pc.Of(y, bf16), pc.Of(yPre ?? y, bf16));
        }
    }

    /// <summary>
    /// Batch slices within one binding, at bindable offsets, for tensors of these floats per batch element; with
    /// <paramref name="bf16Elements"/>, tensors of that many elements bound as bf16 start on bindable offsets too.
    /// </summary>
    private static IEnumerable<Piece> Pieces(GpuDevice device, int batch, long[] perBatchFloats, long? bf16Elements = null) =>
        Shaders.Pieces(device, "Ssd", batch, perBatchFloats, OpTuning.Of(device).MaxBindingBytes, bf16Elements is { } e ? [e] : null);
}
