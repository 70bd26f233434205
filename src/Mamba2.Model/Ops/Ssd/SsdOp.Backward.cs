using System.Runtime.InteropServices;
using Mamba2.Model.Tensors;
using Mamba2.Vulkan;

namespace Mamba2.Model.Ops.Ssd;

public static partial class SsdOp
{
    [StructLayout(LayoutKind.Sequential)]
    private readonly record struct CumsumBwdPush(uint Batch, uint SeqLen, uint Heads, uint Chunk, uint Chunks, SsdFlags Flags,
        float DtMin, float DtMax, uint TilesP, uint TilesN, uint TilesT, uint TileRows, uint Slices, uint TilesS, uint TileCols);

    /// <summary>Rows per first-level block of the dD sum (over positions).</summary>
    private const int ReduceBlockRows = 32;

    /// <summary>The backward stages in order; on a profiling stream each ends with a section of its name.</summary>
    public static readonly IReadOnlyList<string> BackwardStages =
        ["chunk_scan_bwd_dz", "chunk_state_bwd", "state_passing_bwd", "chunk_scan_bwd_dx", "chunk_scan_bwd_dc", "chunk_scan_bwd_db", "chunk_cumsum_bwd", "reduce"];

    /// <summary>The tensor-core backward's own stage: dcb, between dx and dC (<see cref="BackwardStagesOf"/>).</summary>
    private const string DcbStage = "chunk_scan_bwd_dcb";

    private static readonly IReadOnlyList<string> TensorCoreBackwardStages = [.. BackwardStages.Take(3), ChunkCbStage, BackwardStages[3], DcbStage, .. BackwardStages.Skip(4)];

    /// <summary>
    /// The backward's profiled stages on a path and in a precision (<see cref="BackwardStages"/>, with C.B^T and dcb
    /// in the tensor-core modes, or <see cref="RecurrentBackwardStages"/>).
    /// </summary>
    public static IReadOnlyList<string> BackwardStagesOf(SsdPath path, Precision precision = Precision.Fp32) =>
        path == SsdPath.Recurrent ? RecurrentBackwardStages : precision == Precision.Fp32 ? BackwardStages : TensorCoreBackwardStages;

    /// <summary>
    /// The gradients of every input of <see cref="Forward"/> from <paramref name="dy"/> (b, L, h, p) and optionally
    /// the gradient of the final states (b, h, p, n), as mamba_ssm's <c>_mamba_chunk_scan_combined_bwd</c>.
    /// <paramref name="saved"/> is what the forward returned: it keeps the forward's inputs and options (which must
    /// still be alive) and its per-chunk states and dt, and y before the gate when z was given; chunk-local
    /// products are recomputed, not stored. Temporary buffers belong to <paramref name="stream"/> when one is given
    /// (freed with it).
    /// </summary>
    public static SsdGradients Backward(Tensor dy, SsdResult saved, Tensor? dFinalStates = null, CommandStream? stream = null)
    {
        var i = saved.Inputs ?? throw new ArgumentException("Ssd backward: saved must be a result of SsdOp.Forward.", nameof(saved));
        return Backward(dy, saved, i.X, i.Dt, i.A, i.B, i.C, i.Options, dFinalStates, stream);
    }

    private static SsdGradients Backward(Tensor dy, SsdResult saved, Tensor x, Tensor dt, Tensor A, Tensor B, Tensor C,
        SsdOptions o, Tensor? dFinalStates, CommandStream? stream)
    {
        const string op = "Ssd backward";
        var s = SsdShape.Validate(x, dt, A, B, C, o);
        int b = s.Batch, l = s.SeqLen, h = s.Heads, p = s.HeadDim, g = s.Groups, n = s.DState, nc = s.Chunks, q = s.Chunk;
        var xShape = $"x is (b={b}, L={l}, h={h}, p={p})";
        ShapeOps.Expect(dy, "dy", $"{op} ({xShape})", b, l, h, p);
        if (dFinalStates is not null)
        {
            ShapeOps.Expect(dFinalStates, "dfinal_states", $"{op} ({xShape}, n={n})", b, h, p, n);
        }

        ShapeOps.ExpectSameDevice(op, [.. new[] { dy, x, saved.Y, dFinalStates }.OfType<Tensor>()]);
        if (dFinalStates is { DType: not TensorDType.F32 })
        {
            throw new ArgumentException($"{op}: dfinal_states must be float32 (the states are), got {dFinalStates.DType.Name()}.", "dfinal_states");
        }

        if (dy.DType != TensorDType.F32 && !s.Bf16Tensors)
        {
            throw new ArgumentException($"{op}: dy is {dy.DType.Name()} but the forward's x is float32; pass dy as float32.", nameof(dy));
        }

        if (o.IsBidirectional)
        {
            return BackwardBidirectional(dy, saved, x, dt, A, B, C, o, s, dFinalStates, stream);
        }

        if (saved.Bidirectional is not null)
        {
            throw new ArgumentException($"{op}: saved comes from a bidirectional forward but the options are causal; pass the same options.", nameof(saved));
        }

        var from = $"{op}: saved must be what Forward returned for these inputs and chunk_size {q}";
        ShapeOps.Expect(saved.DtOut, "saved.DtOut", from, b, h, nc, q);
        ShapeOps.Expect(saved.ChunkStates, "saved.ChunkStates", from, b, nc, h, p, n);
        ShapeOps.Expect(saved.FinalStates, "saved.FinalStates", from, b, h, p, n);
        if (o.Z is not null && saved.YBeforeGate is null)
        {
            throw new ArgumentException($"{from}: z is given but saved has no y before the gate (it came from a forward without z).", nameof(saved));
        }

        Shaders.EnsureBindable(op, A, o.D is { Rank: 3 } ? null : o.D, o.DtBias);   // D (b, L, h) is bound a batch slice at a time

        var device = x.Device;
        if (PathOn(device, o) == SsdPath.Recurrent)
        {
            return BackwardRecurrent(dy, saved, x, dt, A, B, C, o, s, dFinalStates, stream);
        }

        return BackwardTiled(dy, saved, x, dt, A, B, C, o, s, dFinalStates, stream, null, null, 0);
    }

    /// <summary>
    /// The tiled backward of a causal run (inputs checked). Inside a bidirectional backward, <paramref name="addInto"/>
    /// makes the run add its dx, ddt, dA, dB, dC and ddt_bias to the other run's (none allocated) and
    /// <paramref name="pool"/> lends both runs the same scratch (with fewer dB/dC split copies). With
    /// <paramref name="gShift"/> (+1 or -1, the Hydra form) the run's upstream gradient is dy one step away,
    /// dy[t + gShift], read in place.
    /// </summary>
    private static SsdGradients BackwardTiled(Tensor dy, SsdResult saved, Tensor x, Tensor dt, Tensor A, Tensor B, Tensor C,
        SsdOptions o, SsdShape s, Tensor? dFinalStates, CommandStream? stream, SsdGradients? addInto, ScratchPool? pool,
        int gShift)
    {
        if (gShift != 0 && (o.Z is not null || o.D is not null))
        {
            // chunk_scan's dx epilogue adds D g only for an unshifted g (see G_SHIFT there).
            throw new ArgumentException("Ssd backward: a shifted upstream gradient is read as is, so it cannot be gated or carry D here.", nameof(gShift));
        }

        const string op = "Ssd backward";
        int b = s.Batch, l = s.SeqLen, h = s.Heads, p = s.HeadDim, g = s.Groups, n = s.DState, nc = s.Chunks, q = s.Chunk;
        var device = x.Device;
        var tuning = OpTuning.Of(device);
        var tiles = SsdTiles.Choose(device.Capabilities, s, tuning.ScanTile);
        var bt = SsdBackwardTiles.Choose(device.Capabilities, s, pool is null ? SsdBackwardTiles.MaxSplits : SsdBackwardTiles.BidirectionalMaxSplits, tuning.DbcTile);
        // On tensor cores dC and dB come from dcb, a product per group (tc/chunk_scan_bwd_dbc): no split copies.
        var tc = o.Precision == Precision.Fp32 ? null : TensorCoreTilesFor(device, o.Precision, s);
        var splits = tc is null ? bt.Splits(h / g) : 1;
        var tilesP = Tiles(p, tc?.Scan.BN ?? tiles.ScanBN);   // dx's ddt parts are per headdim tile
        var passLocal = Shaders.PowerOfTwoLocal(device);
        var slices = (p * n + (int)passLocal - 1) / (int)passLocal;
        // dD's first level: tensor-core dx writes it from its epilogue (D never meets a shifted g: refused above);
        // otherwise a pass over blocks of positions.
        var ddRows = tc is not null ? DdPartRows(s, tc.Scan) : (l + ReduceBlockRows - 1) / ReduceBlockRows;
        static int Tiles(int extent, uint tile) => (extent + (int)tile - 1) / (int)tile;
        var tilesN = Tiles(n, tc?.Dbc.BN ?? bt.BN);
        var tilesT = Tiles(q, tc?.Scan.BM ?? bt.BM);
        var tilesS = tc is null ? 0 : Tiles(q, tc.Scan.BN);
        var straddleParts = tc is null ? tilesT * tilesN : tilesT + tilesS;
        long tokens = (long)l * h;
        var pieces = Shaders.Pieces(device, op, b,
            [tokens * p, tokens, (long)l * g * n * splits, (long)h * nc * q * tilesP, (long)h * nc * q * straddleParts,
             (long)nc * h * p * n, (long)ddRows * h * p, (long)h * slices * nc,
             tc is null ? 0 : (long)DcbSplits * nc * g * q * q],   // dcb's partials: the largest tensor-core scratch binding
            OpTuning.Of(device).MaxBindingBytes, s.Bf16Tensors ? [tokens * p, (long)l * g * n] : null).ToList();

        var scope = new TensorScope(device);
        var New = scope.New;

        try
        {
            var grads = addInto ?? NewGradients(scope, o, s);
            var gradCount = scope.Count;
            Tensor Scratch(string name, params int[] shape) => pool is null ? New(name, shape) : pool.Get(name, shape);
            // On bf16 tensors the kernels read dy as bf16: rounded once, as autograd hands a bf16 output its gradient.
            var dyIn = dy.DType == s.TensorType ? dy : scope.NewOf(s.TensorType, "dy", [.. dy.Shape]);
            var scratch = new BackwardScratch(
                G: o.Z is null ? dyIn : scope.NewOf(s.TensorType, "g", b, l, h, p),
                DStates: Scratch("dstates", b, nc, h, p, n),
                DdtPart: Scratch("ddt_part", b, h, nc, q, tilesP),
                Gys: Scratch("gys_part", b, h, nc, q, tilesN),
                Ts: Scratch("ts_part", b, h, nc, q, tilesN),
                Straddle: Scratch("straddle_part", b, h, nc, q, straddleParts),
                Inner: Scratch("inner_part", b, h, slices, nc),
                DaPart: Scratch("dA_part", b, nc, h),
                DbiasPart: Scratch("ddt_bias_part", b, nc, h),
                DbcPart: splits > 1 ? Scratch("dbc_part", b, splits, l, g, n) : null,
                DdPart: o.D is null ? null : New("dD_part", b, ddRows, h * p),
                Products: pool ?? new ScratchPool(device));
            var temps = scope.Since(gradCount);
            Shaders.RunIn(device, stream, st =>
            {
                foreach (var t in temps)
                {
                    st.Own(t);
                }

                if (pool is null)
                {
                    st.Own(scratch.Products);
                }

                if (dyIn != dy)
                {
                    Cast.Into(dy, dyIn, st);
                }

                var geometry = new BackwardGeometry(s, tiles, bt, tc, splits, tilesP, tilesN, tilesT, tilesS, passLocal, slices, ddRows, addInto is not null,
                    gShift switch { 0 => 0u, 1 => 1u, -1 => 2u, _ => throw new ArgumentOutOfRangeException(nameof(gShift)) });
                foreach (var pc in pieces)
                {
                    RecordBackward(st, geometry, pc, dyIn, saved, x, dt, A, B, C, o, dFinalStates, grads, scratch);
                }

                RecordReductions(st, geometry, o, grads, scratch);
                st.Section(BackwardStages[^1]);
            });
            return grads;
        }
        catch
        {
            scope.DisposeAll();
            throw;
        }
    }

    /// <summary>The causal gradients, one per input the forward was given.</summary>
    private static SsdGradients NewGradients(TensorScope scope, SsdOptions o, SsdShape s)
    {
        var New = scope.New;
        // The gradients of x, B, C and z in their inputs' type.
        Tensor Like(string name, params int[] shape) => scope.NewOf(s.TensorType, name, shape);
        int b = s.Batch, l = s.SeqLen, h = s.Heads, p = s.HeadDim, g = s.Groups, n = s.DState;
        return new SsdGradients(
            Like("dx", [b, l, h, p]), New("ddt", [b, l, h]), New("dA", [h]), Like("dB", [b, l, g, n]), Like("dC", [b, l, g, n]),
            o.D is null ? null : New("dD", [.. o.D.Shape]),
            o.Z is null ? null : Like("dz", [b, l, h, p]),
            o.DtBias is null ? null : New("ddt_bias", [h]),
            o.InitialStates is null ? null : New("dinitial_states", [b, h, p, n]));
    }

    /// <summary>
    /// Sizes and tiles shared by every stage of one backward call. Tc: the tensor-core tiles (null in fp32); TilesN
    /// counts the d_state tiles of dC / dB (their row dots' parts), TilesT and TilesS the row and column tiles of dcb
    /// (tensor cores: its straddle parts) or of the fp32 dC / dB; DdRows the rows of dD's first-level parts per batch
    /// element (<see cref="DdPartRows"/> on tensor cores, else blocks of positions). Accumulate: add into existing
    /// gradients; GShift: the kernels' specialization code for g read one step away (0: none, 1: +1, 2: -1; a
    /// constant, not a flag, so the unshifted kernels compile as without it).
    /// </summary>
    private sealed record BackwardGeometry(SsdShape S, SsdTiles Tiles, SsdBackwardTiles Dbc, SsdTensorCoreTiles? Tc, int Splits, int TilesP,
        int TilesN, int TilesT, int TilesS, uint PassLocal, int Slices, int DdRows, bool Accumulate, uint GShift);

    /// <summary>
    /// Intermediates of one backward call; G aliases dy when there is no gate. The *_part tensors are partial sums
    /// (over p tiles, d_state tiles, row tiles, state slices, chunks, batch) added in a fixed order later. Products:
    /// where the tensor-core products' intermediates (C.B^T, dcb) live, shared by both runs of a bidirectional
    /// backward and by the batch pieces of one run.
    /// </summary>
    private sealed record BackwardScratch(Tensor G, Tensor DStates, Tensor DdtPart, Tensor Gys, Tensor Ts, Tensor Straddle,
        Tensor Inner, Tensor DaPart, Tensor DbiasPart, Tensor? DbcPart, Tensor? DdPart, ScratchPool Products);

    private static void RecordBackward(CommandStream st, BackwardGeometry geo, Piece pc, Tensor dy, SsdResult saved, Tensor x,
        Tensor dt, Tensor A, Tensor B, Tensor C, SsdOptions o, Tensor? dFinal, SsdGradients gr, BackwardScratch sc)
    {
        var device = x.Device;
        var s = geo.S;
        var t = geo.Tiles;
        void Mark(int stage) => st.Section(BackwardStages[stage]);

        var (b, l, h, p, g, n, q) = ((uint)pc.Count, (uint)s.SeqLen, (uint)s.Heads, (uint)s.HeadDim, (uint)s.Groups, (uint)s.DState, (uint)s.Chunk);
        var nc = (uint)s.Chunks;
        var local = Shaders.Local1D(device);
        var dFlags = SsdFlagsExtensions.ForD(o.D);

        // 1. The gate: g = dy silu(z) and dz (without z, g is dy).
        var bf16 = s.Bf16Tensors;
        if (o.Z is not null && saved.YBeforeGate is not null && gr.Dz is not null)
        {
            var dz = device.GetKernel(bf16 ? Shaders.ChunkScanBwdDzBf16 : Shaders.ChunkScanBwdDz, new LocalSize(local));
            var count = (long)b * l * h * p;
            st.Dispatch(dz, (Shaders.Groups1D(device, count, local), 1, 1), (uint)count,
                pc.Of(dy, bf16), pc.Of(o.Z, bf16), pc.Of(saved.YBeforeGate, bf16), pc.Of(sc.G, bf16), pc.Of(gr.Dz, bf16));
        }

        Mark(0);

        // 2. Each chunk's local state gradient, sum_t exp(dA_cs[t]) g[t] C[t]^T: chunk_state with GRAD weights.
        RecordChunkState(st, s, t, pc, sc.G, C, saved.DtOut, saved.DACumsum, saved.DACumsumLo, sc.DStates, weights: 1, o.Mirrored, geo.GShift, geo.Tc?.State,
            o.Precision.Operands(device), dInitial: gr.DInitialStates is not null);
        Mark(1);

        // 3. Reverse state passing: the gradient leaving each chunk, d initial_states, S_in . dS_next per chunk.
        var passing = device.GetKernel(Shaders.StatePassingBwd, new LocalSize(geo.PassLocal));
        var passFlags = SsdFlags.DFinalStates.If(dFinal is not null) | SsdFlags.DInitialStates.If(gr.DInitialStates is not null)
            | SsdFlags.Mirrored.If(o.Mirrored);
        st.Dispatch(passing, (Shaders.Groups(device, (long)b * h * geo.Slices), 1, 1),
            new PassingPush(b, l, h, p, n, q, nc, passFlags),
            pc.Of(sc.DStates), pc.Of(saved.ChunkStates), pc.Of(saved.DACumsum),
            pc.Of(dFinal ?? saved.FinalStates), pc.Of(gr.DInitialStates ?? sc.Inner), pc.Of(sc.Inner));
        Mark(2);

        // 4. dx and the direct part of ddt: chunk_scan run backwards in time (ChunkScanBindings.Dx names the roles);
        // 5, 6. dC and dB with the row dots and straddle sums of the dA_cs gradient.
        var dxFlags = dFlags | SsdFlags.Mirrored.If(o.Mirrored) | SsdFlags.Accumulate.If(geo.Accumulate);
        if (geo.Tc is { } tc)
        {
            var cb = RecordChunkCb(st, s, tc.Scan, pc, B, C, o, sc.Products);
            // Without a final-state gradient the last chunk has no state term.
            RecordDxTensorCores(st, s, tc.Scan, pc, o, dxFlags | SsdFlags.DFinalStates.If(dFinal is not null), geo.GShift, cb, sc.G, B, C,
                sc.DStates, saved, A, x, gr.Dx, sc.DdtPart, sc.DdPart);
            Mark(3);
            RecordDbcTensorCores(st, geo, pc, o, cb, sc.G, x, B, C, sc.DStates, saved, gr.DB, gr.DC, sc.Gys, sc.Ts, sc.Straddle, sc.Products, Mark);
        }
        else
        {
            var scan = device.GetKernel(Shaders.ChunkScan, new ChunkScanSpec(t.ScanBM, t.ScanBN, t.ScanBK, t.ScanNK, t.ScanHeads, Reverse: true, geo.GShift));
            var scanItems = (long)((q + t.ScanBM - 1) / t.ScanBM) * geo.TilesP * nc * b * (h / t.ScanHeads);
            st.Dispatch(scan, (Shaders.Groups(device, scanItems), 1, 1), new ScanPush(b, l, h, g, p, n, q, nc, dxFlags),
                ChunkScanBindings.Dx(g: pc.Of(sc.G), B: pc.Of(B), C: pc.Of(C), dStatesNext: pc.Of(sc.DStates), dtOut: pc.Of(saved.DtOut),
                    dACumsum: pc.Of(saved.DACumsum), D: (o.D ?? A).Buffer, x: pc.Of(x), dx: pc.Of(gr.Dx), ddtPart: pc.Of(sc.DdtPart),
                    dACumsumLo: pc.Of(saved.DACumsumLo)).ToArray());
            Mark(3);
            RecordDbc(st, geo, pc, o, sc.G, x, B, C, saved, gr.DB, gr.DC, sc, Mark);
        }

        // 7. dt, A and dt_bias from the gradient of each step's dA and the direct ddt.
        var cumsum = device.GetKernel(Shaders.ChunkCumsumBwd, new ChunkCumsumBwdSpec(System.Numerics.BitOperations.RoundUpToPowerOf2(q), Telescoped: geo.Tc is not null));
        var cumsumFlags = SsdFlags.DtBias.If(o.DtBias is not null) | SsdFlags.DtSoftplus.If(o.DtSoftplus) | SsdFlags.Mirrored.If(o.Mirrored)
            | SsdFlags.Accumulate.If(geo.Accumulate);
        st.Dispatch(cumsum, (Shaders.Groups(device, (long)nc * b * h), 1, 1),
            new CumsumBwdPush(b, l, h, q, nc, cumsumFlags, o.DtLimit.Min, o.DtLimit.Max,
                (uint)geo.TilesP, (uint)geo.TilesN, (uint)geo.TilesT, geo.Tc?.Scan.BM ?? geo.Dbc.BM, (uint)geo.Slices, (uint)geo.TilesS, geo.Tc?.Scan.BN ?? 0),
            pc.Of(dt), A.Buffer, (o.DtBias ?? A).Buffer, pc.Of(saved.DtOut), pc.Of(saved.DACumsum), pc.Of(sc.DdtPart),
            pc.Of(sc.Gys), pc.Of(sc.Ts), pc.Of(sc.Straddle), pc.Of(sc.Inner),
            pc.Of(gr.Ddt), pc.Of(sc.DaPart), pc.Of(sc.DbiasPart));
        Mark(6);

        // 8. dD, first level: sum of g x over blocks of positions (on tensor cores, dx wrote it).
        if (sc.DdPart is not null && geo.Tc is null)
        {
            Reductions.Blocks(st, pc.Of(sc.G, bf16), pc.Of(sc.DdPart), b, l, h * p, 1, ReduceBlockRows, pc.Of(x, bf16), bf16Inputs: bf16);
        }
    }

    /// <summary>
    /// 5, 6. dC (causal) and dB (anti-causal) in fp32: per-head products summed over each group's heads, with the
    /// row dots and (dC) straddle sums of the dA_cs gradient.
    /// </summary>
    private static void RecordDbc(CommandStream st, BackwardGeometry geo, Piece pc, SsdOptions o, Tensor g, Tensor x, Tensor B, Tensor C,
        SsdResult saved, Tensor dB, Tensor dC, BackwardScratch sc, Action<int> mark)
    {
        var device = x.Device;
        var s = geo.S;
        var (b, l, h, p, gr, n, q, nc) = ((uint)pc.Count, (uint)s.SeqLen, (uint)s.Heads, (uint)s.HeadDim, (uint)s.Groups, (uint)s.DState, (uint)s.Chunk, (uint)s.Chunks);
        var bt = geo.Dbc;
        var dbcItems = (long)geo.TilesN * geo.TilesT * nc * geo.Splits * gr * b;
        void Dbc(uint reverse, Tensor u, Tensor v, Tensor r, Tensor sm, Tensor w, Tensor rowDot, Tensor output)
        {
            var kernel = device.GetKernel(Shaders.ChunkScanBwdDbc, new ChunkScanBwdDbcSpec(bt.BM, bt.BN, bt.BK, bt.PK, bt.HeadsPerWorkgroup, reverse != 0, geo.GShift));
            var target = sc.DbcPart ?? output;
            var flags = SsdFlags.Mirrored.If(o.Mirrored) | SsdFlags.Accumulate.If(geo.Accumulate && sc.DbcPart is null);
            st.Dispatch(kernel, (Shaders.Groups(device, dbcItems), 1, 1), new StatePush(b, l, h, gr, p, n, q, nc, flags),
                pc.Of(u), pc.Of(v), pc.Of(r), pc.Of(sm), pc.Of(saved.DtOut), pc.Of(saved.DACumsum), pc.Of(target),
                pc.Of(w), pc.Of(rowDot), pc.Of(sc.Straddle), pc.Of(saved.DACumsumLo));
            if (sc.DbcPart is not null)
            {
                Reductions.Blocks(st, pc.Of(sc.DbcPart), pc.Of(output), b, (uint)geo.Splits, l * gr * n, 1, (uint)geo.Splits, accumulate: geo.Accumulate);
            }
        }

        Dbc(0, g, x, B, saved.ChunkStates, C, sc.Gys, dC);
        mark(4);
        Dbc(1, x, g, C, sc.DStates, B, sc.Ts, dB);
        mark(5);
    }

    /// <summary>Sums over the batch (and chunks) once every piece is recorded: dA, ddt_bias, dD.</summary>
    private static void RecordReductions(CommandStream st, BackwardGeometry geo, SsdOptions o, SsdGradients gr, BackwardScratch sc)
    {
        var s = geo.S;
        var device = gr.Dx.Device;
        var rows = (uint)(s.Batch * s.Chunks);
        Reductions.Blocks(st, sc.DaPart.Buffer, gr.DA.Buffer, 1, rows, (uint)s.Heads, 1, rows, accumulate: geo.Accumulate);
        if (gr.DDtBias is not null)
        {
            Reductions.Blocks(st, sc.DbiasPart.Buffer, gr.DDtBias.Buffer, 1, rows, (uint)s.Heads, 1, rows, accumulate: geo.Accumulate);
        }

        // Never added to: in a bidirectional backward only the second run has D.
        if (gr.DD is not null && sc.DdPart is not null)
        {
            ReduceDParts(st, sc.DdPart.Buffer, gr.DD, (uint)(s.Batch * geo.DdRows), (uint)s.Heads, (uint)s.HeadDim);
        }
    }

    /// <summary>
    /// dD's second level: the sum of the per-block partials (rows, h * p) over the rows, and over the head dimension
    /// too when D is (h) (<paramref name="dD"/>'s shape tells).
    /// </summary>
    private static void ReduceDParts(CommandStream st, BufferBinding parts, Tensor dD, uint rows, uint h, uint p)
    {
        var perHeadDim = dD.Rank == 2;
        Reductions.SumRowsThenInner(st, parts, dD.Buffer, rows, perHeadDim ? h * p : h, perHeadDim ? 1u : p);
    }
}
