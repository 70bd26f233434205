using System.Runtime.InteropServices;
using Mamba2.Model.Tensors;
using Mamba2.Vulkan;

namespace Mamba2.Model.Ops.Ssd;

/// <summary>
/// The chunked SSD (state space duality) scan of Mamba-2, computing exactly what mamba_ssm's
/// <c>mamba_chunk_scan_combined(x, dt, A, B, C, chunk_size, D, z, dt_bias, initial_states, dt_softplus, dt_limit,
/// return_final_states=True)</c> computes, in fp32, in four kernels: chunk_cumsum, chunk_state, state_passing,
/// chunk_scan; and its bidirectional forms (<see cref="SsdOptions.Direction"/>). <see cref="SsdOptions.Precision"/>
/// moves the products onto tensor cores (SsdOp.TensorCores.cs).
/// </summary>
public static partial class SsdOp
{
    [StructLayout(LayoutKind.Sequential)]
    private readonly record struct CumsumPush(uint Batch, uint SeqLen, uint Heads, uint Chunk, uint Chunks, SsdFlags Flags, float DtMin, float DtMax);

    [StructLayout(LayoutKind.Sequential)]
    private readonly record struct StatePush(uint Batch, uint SeqLen, uint Heads, uint Groups, uint HeadDim, uint DState, uint Chunk, uint Chunks, SsdFlags Flags);

    [StructLayout(LayoutKind.Sequential)]
    private readonly record struct PassingPush(uint Batch, uint SeqLen, uint Heads, uint HeadDim, uint DState, uint Chunk, uint Chunks, SsdFlags Flags);

    [StructLayout(LayoutKind.Sequential)]
    private readonly record struct ScanPush(uint Batch, uint SeqLen, uint Heads, uint Groups, uint HeadDim, uint DState, uint Chunk, uint Chunks, SsdFlags Flags);

    /// <summary>The path <see cref="Forward"/> and <see cref="Backward"/> take on this device with these options.</summary>
    public static SsdPath PathOn(GpuDevice device, SsdOptions? options = null) => SsdPaths.Resolve(device, (options ?? new SsdOptions()).Path, (options ?? new SsdOptions()).Precision);

    /// <summary>Whether a bidirectional forward with these options takes the fused pass on this device.</summary>
    public static bool UsesFusedPass(GpuDevice device, SsdOptions options) => options.UsesFusedPass(PathOn(device, options));

    /// <summary>
    /// The forward's profiled stages on a path and in a precision (<see cref="Stages"/>, with C.B^T apart from
    /// chunk_scan in the tensor-core modes, or <see cref="RecurrentStages"/>).
    /// </summary>
    public static IReadOnlyList<string> StagesOf(SsdPath path, Precision precision = Precision.Fp32) =>
        path == SsdPath.Recurrent ? RecurrentStages : precision == Precision.Fp32 ? Stages : TensorCoreStages;

    /// <summary>The tensor-core modes' own stage, C.B^T once per group (tc/chunk_cb), before chunk_scan and dx.</summary>
    private const string ChunkCbStage = "chunk_cb";

    /// <summary>The stages in order; on a profiling stream each ends with a <see cref="CommandStream.Section"/> of its name.</summary>
    public static readonly IReadOnlyList<string> Stages = ["chunk_cumsum", "chunk_state", "state_passing", "chunk_scan"];

    // After Stages: static fields initialize in order.
    private static readonly IReadOnlyList<string> TensorCoreStages = [.. Stages.Take(3), ChunkCbStage, Stages[3]];

    /// <summary>
    /// Runs the forward pass (or records it into <paramref name="stream"/>). Shapes: x (b, L, h, p), dt (b, L, h),
    /// A (h), B and C (b, L, g, n); the options' tensors as documented on <see cref="SsdOptions"/>. Every shape is
    /// checked before anything is recorded. On a profiling stream (<see cref="CommandStream.Profiling"/>) each of
    /// <see cref="Stages"/> is a section.
    /// </summary>
    public static SsdResult Forward(Tensor x, Tensor dt, Tensor A, Tensor B, Tensor C, SsdOptions? options = null,
        CommandStream? stream = null)
    {
        var result = ForwardUnsaved(x, dt, A, B, C, options, stream);
        result.Inputs = new SsdInputs(x, dt, A, B, C, options ?? new SsdOptions());
        return result;
    }

    /// <summary>
    /// The forward without its inputs recorded for the backward. <paramref name="products"/>: where the tensor-core
    /// products' intermediates (C.B^T) live, shared with other runs on the stream (the composed bidirectional forward's
    /// two); else a pool of the stream's own, which the batch pieces take in turn.
    /// </summary>
    private static SsdResult ForwardUnsaved(Tensor x, Tensor dt, Tensor A, Tensor B, Tensor C, SsdOptions? options,
        CommandStream? stream, ScratchPool? products = null)
    {
        const string op = "Ssd";
        var o = options ?? new SsdOptions();
        var s = SsdShape.Validate(x, dt, A, B, C, o);
        var device = x.Device;
        var nc = s.Chunks;
        var states = (long)s.Batch * nc * s.Heads * s.HeadDim * s.DState;
        if ((long)s.Batch * s.SeqLen * s.Heads * s.HeadDim > uint.MaxValue || states > uint.MaxValue)
        {
            throw new ArgumentException($"{op}: tensors of more than 2^32 elements are not supported (x {ShapeOps.Format(x.Shape)}).", nameof(x));
        }

        Shaders.EnsureBindable(op, A, o.D is { Rank: 3 } ? null : o.D, o.DtBias);   // D (b, L, h) is bound a batch slice at a time
        var path = PathOn(device, o);
        if (o.IsBidirectional)
        {
            return o.UsesFusedPass(path) ? ForwardBidirectionalFused(x, dt, A, B, C, o, s, stream) : ForwardBidirectionalComposed(x, dt, A, B, C, o, s, stream);
        }

        var tensorCores = o.Precision == Precision.Fp32 ? null : TensorCoreTilesFor(device, o.Precision, s);
        var tiles = path == SsdPath.Tiled && tensorCores is null ? SsdTiles.Choose(device.Capabilities, s, OpTuning.Of(device).ScanTile) : default;
        var recurrent = path == SsdPath.Recurrent ? SsdRecurrentTiles.Choose(device.Capabilities, s) : default;
        var pieces = ForwardPieces(device, s, tensorCores is null ? 0 : (long)nc * s.Groups * s.Chunk * s.Chunk);   // C.B^T

        var scope = new TensorScope(device);   // an allocation that fails frees the ones before it
        SsdResult result;
        try
        {
            result = new SsdResult(scope.NewOf(x.DType, "y", s.Batch, s.SeqLen, s.Heads, s.HeadDim),
                scope.New("final_states", s.Batch, s.Heads, s.HeadDim, s.DState), scope.New("dt_out", s.Batch, s.Heads, nc, s.Chunk),
                scope.New("dA_cumsum", s.Batch, s.Heads, nc, s.Chunk), scope.New("dA_cumsum_lo", s.Batch, s.Heads, nc, s.Chunk),
                scope.New("chunk_states", s.Batch, nc, s.Heads, s.HeadDim, s.DState),
                o.Z is null ? null : scope.NewOf(x.DType, "y_before_gate", s.Batch, s.SeqLen, s.Heads, s.HeadDim));
        }
        catch
        {
            scope.DisposeAll();
            throw;
        }

        try
        {
            Shaders.RunIn(device, stream, st =>
            {
                var pool = products ?? st.Own(new ScratchPool(device));
                foreach (var pc in pieces)
                {
                    if (tensorCores is not null)
                    {
                        RecordTensorCores(st, s, tensorCores, pc, x, dt, A, B, C, o, result, pool);
                    }
                    else if (path == SsdPath.Recurrent)
                    {
                        RecordRecurrent(st, s, recurrent, pc, x, dt, A, B, C, o, result);
                    }
                    else
                    {
                        Record(st, s, tiles, pc, x, dt, A, B, C, o, result);
                    }
                }
            });
        }
        catch
        {
            result.Dispose();
            throw;
        }

        return result;
    }

    private static void Record(CommandStream st, SsdShape s, SsdTiles t, Piece pc, Tensor x, Tensor dt, Tensor A, Tensor B, Tensor C,
        SsdOptions o, SsdResult r)
    {
        var device = x.Device;
        void Mark(string stage) => st.Section(stage);

        var (b, l, h, p, g, n, q) = ((uint)pc.Count, (uint)s.SeqLen, (uint)s.Heads, (uint)s.HeadDim, (uint)s.Groups, (uint)s.DState, (uint)s.Chunk);
        var nc = (uint)s.Chunks;

        // 1. chunk_cumsum: one workgroup of the next power of two >= Q per (chunk, batch, head).
        RecordCumsum(st, s, pc, dt, A, o, r.DtOut, r.DACumsum, r.DACumsumLo);
        Mark(Stages[0]);

        // 2. chunk_state: each chunk's own state.
        RecordChunkState(st, s, t, pc, x, B, r.DtOut, r.DACumsum, r.DACumsumLo, r.ChunkStates, weights: 0, o.Mirrored);
        Mark(Stages[1]);

        // 3. state_passing: states entering each chunk (in place) and the final state.
        RecordStatePassing(st, s, pc, r.ChunkStates, r.DACumsum, o.InitialStates, r.FinalStates, o.Mirrored);
        Mark(Stages[2]);

        // 4. chunk_scan: outputs.
        var scan = device.GetKernel(Shaders.ChunkScan, new ChunkScanSpec(t.ScanBM, t.ScanBN, t.ScanBK, t.ScanNK, t.ScanHeads, Reverse: false, GShift: 0));
        var scanItems = (long)((q + t.ScanBM - 1) / t.ScanBM) * ((p + t.ScanBN - 1) / t.ScanBN) * nc * b * (h / t.ScanHeads);
        var flags = SsdFlagsExtensions.ForD(o.D) | (o.Z is null ? SsdFlags.None : SsdFlags.Z | SsdFlags.SaveUngated) | SsdFlags.Mirrored.If(o.Mirrored);
        st.Dispatch(scan, (Shaders.Groups(device, scanItems), 1, 1), new ScanPush(b, l, h, g, p, n, q, nc, flags),
            ChunkScanBindings.Forward(x: pc.Of(x), C: pc.Of(C), B: pc.Of(B), states: pc.Of(r.ChunkStates), dtOut: pc.Of(r.DtOut),
                dACumsum: pc.Of(r.DACumsum), D: (o.D ?? A).Buffer, z: pc.Of(o.Z ?? x), y: pc.Of(r.Y), yBeforeGate: pc.Of(r.YBeforeGate ?? r.Y),
                dACumsumLo: pc.Of(r.DACumsumLo)).ToArray());
        Mark(Stages[3]);
    }

    /// <summary>
    /// The batch slices a forward records one at a time: each of its per-batch tensors (x, dt, B and C, the states,
    /// the per-chunk arrays, and <paramref name="extra"/> floats a batch element of the path's own) within one binding;
    /// bf16 x, B, C, z and y (<see cref="SsdShape.Bf16Tensors"/>) start on bindable offsets too.
    /// </summary>
    private static List<Piece> ForwardPieces(GpuDevice device, SsdShape s, long extra)
    {
        long tokens = (long)s.SeqLen * s.Heads;
        var nc = s.Chunks;
        return Shaders.Pieces(device, "Ssd", s.Batch,
            [tokens * s.HeadDim, tokens, (long)s.SeqLen * s.Groups * s.DState, (long)s.Heads * s.HeadDim * s.DState,
             (long)s.Heads * nc * s.Chunk, (long)nc * s.Heads * s.HeadDim * s.DState, extra], OpTuning.Of(device).MaxBindingBytes,
            s.Bf16Tensors ? [tokens * s.HeadDim, (long)s.SeqLen * s.Groups * s.DState] : null).ToList();
    }

    /// <summary>chunk_cumsum: dt after bias, softplus and clamp, and its within-chunk cumsum times A (hi + lo).</summary>
    private static void RecordCumsum(CommandStream st, SsdShape s, Piece pc, Tensor dt, Tensor A, SsdOptions o, Tensor dtOut, Tensor dACs, Tensor dACsLo)
    {
        var device = dt.Device;
        var (b, l, h, q, nc) = ((uint)pc.Count, (uint)s.SeqLen, (uint)s.Heads, (uint)s.Chunk, (uint)s.Chunks);
        var cumsum = device.GetKernel(Shaders.ChunkCumsum, new LocalSize(System.Numerics.BitOperations.RoundUpToPowerOf2(q)));
        var flags = SsdFlags.DtBias.If(o.DtBias is not null) | SsdFlags.DtSoftplus.If(o.DtSoftplus) | SsdFlags.Mirrored.If(o.Mirrored);
        st.Dispatch(cumsum, (Shaders.Groups(device, (long)nc * b * h), 1, 1),
            new CumsumPush(b, l, h, q, nc, flags, o.DtLimit.Min, o.DtLimit.Max),
            pc.Of(dt), A.Buffer, (o.DtBias ?? A).Buffer, pc.Of(dtOut), pc.Of(dACs), pc.Of(dACsLo));
    }

    /// <summary>
    /// chunk_state with the given weights (0: forward states, 1: the backward's state gradient); with weights 1,
    /// <paramref name="gShift"/> is the kernels' code for g read one step away (0: none, 1: +1, 2: -1), and the first
    /// chunk's gradient is computed only with <paramref name="dInitial"/> (state_passing_bwd needs it for nothing else).
    /// On tensor cores (tc/chunk_state) at the state family's tile <paramref name="tc"/> when given, multiplying
    /// <paramref name="operands"/>.
    /// </summary>
    private static void RecordChunkState(CommandStream st, SsdShape s, SsdTiles t, Piece pc, Tensor x, Tensor B, Tensor dtOut, Tensor dACs,
        Tensor dACsLo, Tensor states, uint weights, bool mirrored, uint gShift = 0, SsdTensorCoreTile? tc = null, GemmOperands operands = GemmOperands.F16,
        bool dInitial = false)
    {
        var device = x.Device;
        var (b, l, h, g, p, n, q, nc) = ((uint)pc.Count, (uint)s.SeqLen, (uint)s.Heads, (uint)s.Groups, (uint)s.HeadDim, (uint)s.DState, (uint)s.Chunk, (uint)s.Chunks);
        var bf16 = x.DType == TensorDType.BF16;   // x and B (the bf16 tensors' variant; the fp32 kernel refuses them at binding)
        Kernel state;
        long items;
        if (tc is null)
        {
            state = device.GetKernel(Shaders.ChunkState, new ChunkStateSpec(t.StateBM, t.StateBN, t.StateBK, Grad: weights != 0, gShift));
            items = (long)((p + t.StateBM - 1) / t.StateBM) * ((n + t.StateBN - 1) / t.StateBN) * nc * b * h;
        }
        else
        {
            state = device.GetKernel(Shaders.ChunkStateTc(operands, bf16), tc.StateSpec(grad: weights != 0, gShift));
            items = tc.Tiles(p, n) * nc * b * h;
        }

        st.Dispatch(state, (Shaders.Groups(device, items), 1, 1), new StatePush(b, l, h, g, p, n, q, nc,
                SsdFlags.Mirrored.If(mirrored) | SsdFlags.DInitialStates.If(dInitial)),
            pc.Of(x, bf16), pc.Of(B, bf16), pc.Of(dtOut), pc.Of(dACs), pc.Of(states), pc.Of(dACsLo));
    }

    /// <summary>state_passing: in place, the state entering each chunk, and the final state.</summary>
    private static void RecordStatePassing(CommandStream st, SsdShape s, Piece pc, Tensor states, Tensor dACs, Tensor? initial, Tensor final,
        bool mirrored)
    {
        var device = states.Device;
        var (b, l, h, p, n, q, nc) = ((uint)pc.Count, (uint)s.SeqLen, (uint)s.Heads, (uint)s.HeadDim, (uint)s.DState, (uint)s.Chunk, (uint)s.Chunks);
        var local = Shaders.Local1D(device);
        var flags = SsdFlags.InitialStates.If(initial is not null) | SsdFlags.Mirrored.If(mirrored);
        st.Dispatch(device.GetKernel(Shaders.StatePassing, new LocalSize(local)), (Shaders.Groups1D(device, (long)b * h * p * n, local), 1, 1),
            new PassingPush(b, l, h, p, n, q, nc, flags), pc.Of(states), pc.Of(dACs), pc.Of(initial ?? final), pc.Of(final));
    }
}
