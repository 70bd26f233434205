using Mamba2.Model.Tensors;
using Mamba2.Vulkan;

namespace Mamba2.Model.Ops;

/// <summary>The SPIR-V kernels embedded in this assembly and their binding interfaces.</summary>
internal static class Shaders
{
    private static readonly System.Reflection.Assembly Self = typeof(Shaders).Assembly;

    // The interface (bindings, their access, the push-constant size) is read from the SPIR-V: one line a kernel.
    private static KernelSource<TSpec> Source<TSpec>(string name)
        where TSpec : struct, ISpecialization => new(Self, $"shaders/{name}.spv");

    public static readonly KernelSource<ElementwiseSpec> Elementwise = Source<ElementwiseSpec>("nn/elementwise");

    public static readonly KernelSource<GemmSpec> Gemm = Source<GemmSpec>("nn/gemm");

    // One source per variant, made once: a source caches its SPIR-V interface, which every dispatch's pipeline
    // lookup reads.
    private static readonly Dictionary<(GemmOperands, TensorCoreApi, bool, bool), KernelSource<GemmCoopmatSpec>> CoopmatVariants =
        (from operands in new[] { GemmOperands.F16, GemmOperands.Bf16 }
         from api in new[] { TensorCoreApi.Khr, TensorCoreApi.NvCooperativeMatrix2 }
         from input16 in new[] { false, true }
         from outBf16 in new[] { false, true }
         let f16 = operands == GemmOperands.F16
         let cm2 = api == TensorCoreApi.NvCooperativeMatrix2
         where !(cm2 && outBf16)
         select (Key: (operands, api, input16, outBf16), Source: new KernelSource<GemmCoopmatSpec>(Self,
             $"shaders/tc/gemm_{(cm2 ? "coopmat2" : "coopmat")}_{(f16 ? "f16" : "bf16")}{(input16 ? "_in16" : "")}{(outBf16 ? "_obf16" : "")}.spv",
             ShaderFeatures.KhrCooperativeMatrix | (cm2 ? ShaderFeatures.NvCooperativeMatrix2 : 0) | (f16 ? 0 : ShaderFeatures.Bfloat16))))
        .ToDictionary(v => v.Key, v => v.Source);

    /// <summary>
    /// Tensor-core GEMM variants (shaders/tc/gemm_coopmat.comp), by operand type (f16, bf16), API (KHR, NV coopmat2),
    /// whether A and B are fp32 (rounded as they are staged) or already 16-bit operands (INPUT16), and whether C is
    /// bf16 (OUT_BF16: KHR only).
    /// </summary>
    public static KernelSource<GemmCoopmatSpec> GemmCoopmat(GemmOperands operands, TensorCoreApi api, bool input16 = false, bool outBf16 = false) =>
        CoopmatVariants.TryGetValue((operands.Kernel(), api, input16, outBf16), out var source)
            ? source
            : throw new ArgumentException($"the {api} tensor-core GEMM writes float32 C only", nameof(outBf16));

    private static readonly GemmOperands[] SsdOperands = [GemmOperands.F16, GemmOperands.Bf16, GemmOperands.Bf16ViaF16];

    // One source per operand type (f16, bf16, bf16 values as f16: tc_product's OPERAND_BF16_VALUES), made once; with
    // bf16Tensors, the variants that read and write the SSD's per-position tensors as bf16 (tensor_elems.glsl), for
    // the bf16 operands only (the f16 entry is null).
    private static KernelSource<TSpec>?[] SsdVariants<TSpec>(string name, bool bf16Tensors = false)
        where TSpec : struct, ISpecialization =>
        [.. SsdOperands.Select(o => bf16Tensors && o == GemmOperands.F16 ? null : new KernelSource<TSpec>(Self,
            $"shaders/tc/{name}_{o switch { GemmOperands.F16 => "f16", GemmOperands.Bf16 => "bf16", _ => "bf16f16" }}{(bf16Tensors ? "_tbf16" : "")}.spv",
            ShaderFeatures.KhrCooperativeMatrix | (o == GemmOperands.Bf16 ? ShaderFeatures.Bfloat16 : 0)))];

    private static KernelSource<TSpec> Of<TSpec>(KernelSource<TSpec>?[] variants, GemmOperands operands)
        where TSpec : struct, ISpecialization =>
        (Array.IndexOf(SsdOperands, operands) is >= 0 and var i ? variants[i] : null)
        ?? throw new ArgumentOutOfRangeException(nameof(operands), $"the SSD has no {operands} tensor-core kernels for these tensors");

    private static readonly KernelSource<SsdTcSpec>?[] ChunkCbVariants = SsdVariants<SsdTcSpec>("chunk_cb");
    private static readonly KernelSource<ChunkStateTcSpec>?[] ChunkStateVariants = SsdVariants<ChunkStateTcSpec>("chunk_state");
    private static readonly KernelSource<ChunkScanTcSpec>?[] ChunkScanVariants = SsdVariants<ChunkScanTcSpec>("chunk_scan");
    private static readonly KernelSource<SsdTcSpec>?[] ChunkCbBf16Variants = SsdVariants<SsdTcSpec>("chunk_cb", bf16Tensors: true);
    private static readonly KernelSource<ChunkStateTcSpec>?[] ChunkStateBf16Variants = SsdVariants<ChunkStateTcSpec>("chunk_state", bf16Tensors: true);
    private static readonly KernelSource<ChunkScanTcSpec>?[] ChunkScanBf16Variants = SsdVariants<ChunkScanTcSpec>("chunk_scan", bf16Tensors: true);
    private static readonly KernelSource<ChunkScanTcSpec>?[] ChunkScanBidirBf16Variants = SsdVariants<ChunkScanTcSpec>("chunk_scan_bidir", bf16Tensors: true);
    private static readonly KernelSource<ChunkScanBwdDcbTcSpec>?[] ChunkScanBwdDcbBf16Variants = SsdVariants<ChunkScanBwdDcbTcSpec>("chunk_scan_bwd_dcb", bf16Tensors: true);
    private static readonly KernelSource<ChunkScanBwdDbcTcSpec>?[] ChunkScanBwdDbcBf16Variants = SsdVariants<ChunkScanBwdDbcTcSpec>("chunk_scan_bwd_dbc", bf16Tensors: true);
    private static readonly KernelSource<ChunkScanTcSpec>?[] ChunkScanBidirVariants = SsdVariants<ChunkScanTcSpec>("chunk_scan_bidir");
    private static readonly KernelSource<ChunkScanBwdDcbTcSpec>?[] ChunkScanBwdDcbVariants = SsdVariants<ChunkScanBwdDcbTcSpec>("chunk_scan_bwd_dcb");
    private static readonly KernelSource<ChunkScanBwdDbcTcSpec>?[] ChunkScanBwdDbcVariants = SsdVariants<ChunkScanBwdDbcTcSpec>("chunk_scan_bwd_dbc");

    /// <summary>The SSD's C.B^T per (batch, chunk, group) on tensor cores (tc/chunk_cb.comp), with these operands (f16 scaled per slice, bf16, or bf16 values as f16).</summary>
    /// <remarks>With <paramref name="bf16Tensors"/>, B and C are bf16 (bf16 operands only).</remarks>
    public static KernelSource<SsdTcSpec> ChunkCbTc(GemmOperands operands, bool bf16Tensors = false) =>
        Of(bf16Tensors ? ChunkCbBf16Variants : ChunkCbVariants, operands);

    /// <summary>chunk_state on tensor cores (tc/chunk_state.comp); with <paramref name="bf16Tensors"/> x and B (GRAD: g and C) bf16.</summary>
    public static KernelSource<ChunkStateTcSpec> ChunkStateTc(GemmOperands operands, bool bf16Tensors = false) =>
        Of(bf16Tensors ? ChunkStateBf16Variants : ChunkStateVariants, operands);

    /// <summary>
    /// chunk_scan on tensor cores (tc/chunk_scan.comp), forward or run backwards (the backward's dx); with
    /// <paramref name="bf16Tensors"/> x, C, z, y and y before the gate bf16 (REVERSE: g, B, x and dx).
    /// </summary>
    public static KernelSource<ChunkScanTcSpec> ChunkScanTc(GemmOperands operands, bool bf16Tensors = false) =>
        Of(bf16Tensors ? ChunkScanBf16Variants : ChunkScanVariants, operands);

    /// <summary>The bidirectional sum form's output pass on tensor cores, both scans at once (tc/chunk_scan.comp's BIDIR variant).</summary>
    /// <remarks>With <paramref name="bf16Tensors"/>, x, C, z, y and y before the gate are bf16.</remarks>
    public static KernelSource<ChunkScanTcSpec> ChunkScanBidirTc(GemmOperands operands, bool bf16Tensors = false) =>
        Of(bf16Tensors ? ChunkScanBidirBf16Variants : ChunkScanBidirVariants, operands);

    /// <summary>The backward's dcb (the heads' weighted g.x^T per group) and straddle parts on tensor cores (tc/chunk_scan_bwd_dcb.comp).</summary>
    /// <remarks>With <paramref name="bf16Tensors"/>, g and x are bf16.</remarks>
    public static KernelSource<ChunkScanBwdDcbTcSpec> ChunkScanBwdDcbTc(GemmOperands operands, bool bf16Tensors = false) =>
        Of(bf16Tensors ? ChunkScanBwdDcbBf16Variants : ChunkScanBwdDcbVariants, operands);

    /// <summary>The backward's dC (forward in time) or dB (Reverse) from dcb on tensor cores (tc/chunk_scan_bwd_dbc.comp).</summary>
    /// <remarks>With <paramref name="bf16Tensors"/>, g or x, B, C and the output (dC or dB) are bf16.</remarks>
    public static KernelSource<ChunkScanBwdDbcTcSpec> ChunkScanBwdDbcTc(GemmOperands operands, bool bf16Tensors = false) =>
        Of(bf16Tensors ? ChunkScanBwdDbcBf16Variants : ChunkScanBwdDbcVariants, operands);

    /// <summary>fp32 to packed f16, bf16 or bf16-valued f16 operands, times their tensor's power-of-two scale, for the INPUT16 GEMM variants.</summary>
    public static readonly KernelSource<ToOperand16Spec> ToOperand16 = Source<ToOperand16Spec>("nn/to_operand16");

    /// <summary>max |x| of a tensor folded into one slot of a result (the operand scales of <see cref="ToOperand16"/>).</summary>
    public static readonly KernelSource<LocalSize> AbsMax = Source<LocalSize>("nn/absmax");

    public static readonly KernelSource<GemmLanesSpec> GemmLanes = Source<GemmLanesSpec>("nn/gemm_lanes");

    public static readonly KernelSource<LocalSize> ChunkCumsum = Source<LocalSize>("ssd/chunk_cumsum");

    public static readonly KernelSource<ChunkStateSpec> ChunkState = Source<ChunkStateSpec>("ssd/chunk_state");

    public static readonly KernelSource<LocalSize> StatePassing = Source<LocalSize>("ssd/state_passing");

    public static readonly KernelSource<ChunkScanSpec> ChunkScan = Source<ChunkScanSpec>("ssd/chunk_scan");

    public static readonly KernelSource<LocalSize> ChunkScanBwdDz = Source<LocalSize>("ssd/chunk_scan_bwd_dz");

    /// <summary>The gate's backward on bf16 dy, z, y before the gate, g and dz.</summary>
    public static readonly KernelSource<LocalSize> ChunkScanBwdDzBf16 = Source<LocalSize>("ssd/chunk_scan_bwd_dz_bf16");

    public static readonly KernelSource<LocalSize> StatePassingBwd = Source<LocalSize>("ssd/state_passing_bwd");

    public static readonly KernelSource<ChunkScanBwdDbcSpec> ChunkScanBwdDbc = Source<ChunkScanBwdDbcSpec>("ssd/chunk_scan_bwd_dbc");

    public static readonly KernelSource<ChunkCumsumBwdSpec> ChunkCumsumBwd = Source<ChunkCumsumBwdSpec>("ssd/chunk_cumsum_bwd");

    public static readonly KernelSource<SsdRecurrentSpec> SsdRecurrent = Source<SsdRecurrentSpec>("ssd/ssd_recurrent");

    public static readonly KernelSource<SsdRecurrentSpec> SsdRecurrentBwdDx = Source<SsdRecurrentSpec>("ssd/ssd_recurrent_bwd_dx");

    public static readonly KernelSource<SsdRecurrentBwdStateSpec> SsdRecurrentBwdState = Source<SsdRecurrentBwdStateSpec>("ssd/ssd_recurrent_bwd_state");

    public static readonly KernelSource<LocalSize> SsdRecurrentBwdDt = Source<LocalSize>("ssd/ssd_recurrent_bwd_dt");

    public static readonly KernelSource<LocalSize> SsdRecurrentBwdDbc = Source<LocalSize>("ssd/ssd_recurrent_bwd_dbc");

    public static readonly KernelSource<SeqShiftSpec> SeqShift = Source<SeqShiftSpec>("ssd/seq_shift");

    public static readonly KernelSource<LocalSize> BidirCombine = Source<LocalSize>("ssd/bidir_combine");

    /// <summary>bidir_combine on bf16 scan outputs, x, z and y (D fp32).</summary>
    public static readonly KernelSource<LocalSize> BidirCombineBf16 = Source<LocalSize>("ssd/bidir_combine_bf16");

    public static readonly KernelSource<ChunkScanBidirSpec> ChunkScanBidir = Source<ChunkScanBidirSpec>("ssd/chunk_scan_bidir");

    // Kernels built a second time for 16-bit tensors, by the defines their names carry: OUT_BF16 ("_out_bf16": an
    // output stored as the products' bf16 operands), TENSORS_BF16 ("_bf16": the SSD's activations and their
    // gradients), IN_BF16 ("_in_bf16": columns read in place from the fused projection's output). One source per
    // variant, made the first time it is asked for.
    private static readonly System.Collections.Concurrent.ConcurrentDictionary<string, object> Variants = new();

    private static KernelSource<TSpec> Variant<TSpec>(string name, bool outBf16 = false, bool tensorsBf16 = false, bool inBf16 = false)
        where TSpec : struct, ISpecialization =>
        (KernelSource<TSpec>)Variants.GetOrAdd(
            $"{name}{(outBf16 ? "_out_bf16" : "")}{(tensorsBf16 ? "_bf16" : "")}{(inBf16 ? "_in_bf16" : "")}", n => Source<TSpec>(n));

    /// <summary>conv1d (nn/conv1d.comp): its outputs bf16 (the SSD's x, B and C as bf16 tensors) and x bf16 (in_proj's output) where asked.</summary>
    public static KernelSource<Conv1dSpec> Conv1dOf(bool bf16Outputs, bool bf16X) =>
        Variant<Conv1dSpec>("nn/conv1d", tensorsBf16: bf16Outputs, inBf16: bf16X);

    /// <summary>conv1d_bwd: bf16 dy parts, dx stored as bf16 bits (<see cref="PackedColumns"/>), a bf16 x, where asked.</summary>
    public static KernelSource<Conv1dBwdSpec> Conv1dBwdOf(bool bf16Dy, bool packedDx, bool bf16X) =>
        Variant<Conv1dBwdSpec>("nn/conv1d_bwd", outBf16: packedDx, tensorsBf16: bf16Dy, inBf16: bf16X);

    /// <summary>rmsnorm on a bf16 x (the SSD's y on bf16 tensors) and a bf16 z (in_proj's output) where asked.</summary>
    public static KernelSource<RmsNormSpec> RmsNormOf(bool bf16X, bool bf16Z) =>
        Variant<RmsNormSpec>("nn/rmsnorm", tensorsBf16: bf16X, inBf16: bf16Z);

    /// <summary>rmsnorm_bwd: a bf16 x (dx written bf16), dz stored as bf16 bits (<see cref="PackedColumns"/>), a bf16 z, where asked.</summary>
    public static KernelSource<RmsNormBwdSpec> RmsNormBwdOf(bool bf16X, bool packedDz, bool bf16Z) =>
        Variant<RmsNormBwdSpec>("nn/rmsnorm_bwd", outBf16: packedDz, tensorsBf16: bf16X, inBf16: bf16Z);

    /// <summary>fp32 to bf16 tensors and back (Tensor.DType; 16-bit storage).</summary>
    public static readonly KernelSource<ConvertSpec> Convert = Source<ConvertSpec>("nn/convert");

    public static readonly KernelSource<CrossEntropySpec> CrossEntropy = Source<CrossEntropySpec>("nn/cross_entropy");

    public static readonly KernelSource<CrossEntropyRowsSpec> CrossEntropyRows = Source<CrossEntropyRowsSpec>("nn/cross_entropy_rows");

    public static readonly KernelSource<EmbeddingSpec> Embedding = Source<EmbeddingSpec>("nn/embedding");

    public static readonly KernelSource<LocalSize> AdamW = Source<LocalSize>("nn/adamw");

    public static readonly KernelSource<NoSpecialization> GradNorm = Source<NoSpecialization>("nn/grad_norm");

    /// <summary>copy_columns from bf16 columns (in_proj's output) and into bf16 bits (<see cref="PackedColumns"/>) where asked.</summary>
    public static KernelSource<CopyColumnsSpec> CopyColumnsOf(bool bf16Src, bool bf16Dst) =>
        Variant<CopyColumnsSpec>("nn/copy_columns", outBf16: bf16Dst, inBf16: bf16Src);

    public static readonly KernelSource<LocalSize> NegExp = Source<LocalSize>("nn/neg_exp");

    public static readonly KernelSource<LocalSize> BiasAdd = Source<LocalSize>("nn/bias_add");

    public static readonly KernelSource<Conv1dStepSpec> Conv1dStep = Source<Conv1dStepSpec>("nn/conv1d_step");

    public static readonly KernelSource<LocalSize> SsdStep = Source<LocalSize>("ssd/ssd_step");

    public static readonly KernelSource<LocalSize> ArgMaxRows = Source<LocalSize>("nn/argmax_rows");

    public static readonly KernelSource<SumSquaresSpec> SumSquares = Source<SumSquaresSpec>("nn/sum_squares");

    public static readonly KernelSource<ReduceSumSpec> ReduceSum = Source<ReduceSumSpec>("nn/reduce_sum");

    /// <summary>reduce_sum over bf16 inputs (fp32 sums).</summary>
    public static readonly KernelSource<ReduceSumSpec> ReduceSumBf16 = Source<ReduceSumSpec>("nn/reduce_sum_bf16");

    /// <summary>Workgroups for a kernel that walks <paramref name="items"/> work items with a stride.</summary>
    public static uint Groups(GpuDevice device, long items) =>
        (uint)Math.Clamp(items, 1, device.Capabilities.MaxWorkgroupCount.X);

    /// <summary>Throws, naming the tensor, when one binding cannot cover it on this device.</summary>
    public static void EnsureBindable(string op, params Tensor?[] tensors)
    {
        foreach (var t in tensors)
        {
            if (t is null)
            {
                continue;
            }

            var range = t.Device.Capabilities.MaxStorageBufferRange;
            if (t.SizeBytes > range)
            {
                throw new ArgumentException(
                    $"{op}: {t.Name} {ShapeOps.Format(t.Shape)} is {t.SizeBytes} bytes, more than one binding can cover on {t.Device.Name} (maxStorageBufferRange {range}); split the batch.",
                    t.Name);
            }
        }
    }

    /// <summary>Workgroups for a 1-D grid-stride kernel over <paramref name="n"/> elements.</summary>
    public static uint Groups1D(GpuDevice device, long n, uint local) =>
        (uint)Math.Clamp((n + local - 1) / local, 1, device.Capabilities.MaxWorkgroupCount.X);

    /// <summary>The largest power of two within <see cref="Local1D"/>: workgroups that reduce with a tree.</summary>
    public static uint PowerOfTwoLocal(GpuDevice device) => PowerOfTwoAtMost(Local1D(device));

    /// <summary>The largest power of two not above <paramref name="n"/> (n at least 1).</summary>
    public static uint PowerOfTwoAtMost(uint n) => System.Numerics.BitOperations.RoundUpToPowerOf2(n + 1) / 2;

    /// <summary>
    /// The workgroup of a kernel that reduces each row of <paramref name="width"/> elements with a tree (a power of
    /// two). On a GPU one element per invocation, at least a warp: a 256-wide group over a 64-wide row idles three
    /// quarters of it. On a CPU driver one SIMD vector (the subgroup): its invocations run as vector lanes and each
    /// barrier switches between the group's vectors, so fewer, longer-looping invocations cost less.
    /// </summary>
    public static uint RowLocal(GpuDevice device, long width)
    {
        var max = PowerOfTwoLocal(device);
        if (OpTuning.Of(device).RowLocal is { } forced)
        {
            return Math.Min(max, forced);
        }

        if (device.Info.IsCpu)
        {
            return Math.Min(max, System.Numerics.BitOperations.RoundUpToPowerOf2(Math.Max(1u, device.Capabilities.SubgroupSize)));
        }

        return (uint)Math.Min(max, Math.Max(32, System.Numerics.BitOperations.RoundUpToPowerOf2((ulong)Math.Max(1, width))));
    }


    /// <summary>A 1-D workgroup size: 256, or less where the device allows fewer invocations.</summary>
    public static uint Local1D(GpuDevice device) => Math.Min(256u, device.Capabilities.MaxWorkgroupInvocationsX);

    /// <summary>
    /// Splits a batch so that the slice of every batch-leading tensor fits one binding and starts at a bindable
    /// offset. <paramref name="perBatchFloats"/> lists each tensor's floats per batch element (a bf16 tensor's elements
    /// too, which overstates its range), <paramref name="perBatchHalves"/> the elements of those bound as 16-bit
    /// elements, whose slices must start on bindable offsets too. A single piece when everything fits.
    /// </summary>
    public static IReadOnlyList<(long First, long Count)> BatchPieces(GpuDevice device, string op, long batch,
        IReadOnlyList<long> perBatchFloats, ulong? maxRangeBytes = null, IReadOnlyList<long>? perBatchHalves = null) =>
        BatchPieces(device.Capabilities, device.Name, op, batch, perBatchFloats, maxRangeBytes, perBatchHalves);

    /// <summary><see cref="BatchPieces(GpuDevice, string, long, IReadOnlyList{long}, ulong?, IReadOnlyList{long}?)"/> for a device's limits.</summary>
    internal static IReadOnlyList<(long First, long Count)> BatchPieces(DeviceCapabilities caps, string deviceName, string op, long batch,
        IReadOnlyList<long> perBatchFloats, ulong? maxRangeBytes = null, IReadOnlyList<long>? perBatchHalves = null)
    {
        var range = (long)Math.Min(maxRangeBytes ?? caps.MaxStorageBufferRange, caps.MaxStorageBufferRange);
        var largest = perBatchFloats.Max() * sizeof(float);
        if (largest * batch <= range)
        {
            return [(0, batch)];
        }

        var perPiece = range / largest;
        // Piece starts are multiples of `step` batch elements so every slice offset is bindable.
        var align = (long)caps.MinStorageBufferOffsetAlignment;
        long step = 1;
        foreach (var bytes in perBatchFloats.Select(f => f * sizeof(float)).Concat((perBatchHalves ?? []).Select(e => e * 2)))
        {
            var need = align / (long)System.Numerics.BigInteger.GreatestCommonDivisor(align, bytes);
            step = step / (long)System.Numerics.BigInteger.GreatestCommonDivisor(step, need) * need;
        }

        perPiece -= perPiece % step;
        if (perPiece < 1)
        {
            throw new ArgumentException(
                $"{op}: one batch element needs {largest} bytes in one binding ({step} elements for aligned slices), more than {deviceName}'s maxStorageBufferRange ({range}); shorten the sequence.");
        }

        var pieces = new List<(long, long)>();
        for (long first = 0; first < batch; first += perPiece)
        {
            pieces.Add((first, Math.Min(perPiece, batch - first)));
        }

        return pieces;
    }

    /// <summary><see cref="BatchPieces"/> as <see cref="Piece"/>s.</summary>
    public static IEnumerable<Piece> Pieces(GpuDevice device, string op, long batch, IReadOnlyList<long> perBatchFloats, ulong? maxRangeBytes = null,
        IReadOnlyList<long>? perBatchHalves = null) =>
        BatchPieces(device, op, batch, perBatchFloats, maxRangeBytes, perBatchHalves).Select(p => new Piece(p.First, p.Count));

    /// <summary>
    /// The binding for <paramref name="count"/> elements of <paramref name="t"/> from element <paramref name="first"/>:
    /// fp32 unless <paramref name="bf16"/> says the kernel binds this tensor as 16-bit elements (then either dtype
    /// would be refused at the other's binding).
    /// </summary>
    public static BufferBinding Slice(Tensor t, long first, long count, bool bf16 = false)
    {
        if (bf16 != (t.DType == TensorDType.BF16))
        {
            throw new ArgumentException($"{t.Name} is a {t.DType.Name()} tensor; here it must be {(bf16 ? "bfloat16" : "float32")}.", t.Name);
        }

        var bytes = (ulong)t.DType.Bytes();
        return new(t.Storage, (ulong)first * bytes, (ulong)count * bytes);
    }

    /// <summary>Runs <paramref name="record"/> in <paramref name="stream"/>, or in a stream of its own that is submitted at once.</summary>
    public static void RunIn(GpuDevice device, CommandStream? stream, Action<CommandStream> record)
    {
        if (stream is not null)
        {
            record(stream);
            return;
        }

        using var own = device.BeginStream();
        record(own);
        own.Submit();
    }
}

/// <summary>Batch elements [First, First + Count): every batch-leading tensor is bound as that slice.</summary>
internal readonly record struct Piece(long First, long Count)
{
    public BufferBinding Of(Tensor t) => Of(t, bf16: false);

    /// <summary>The slice of <paramref name="t"/>, bound as 16-bit elements where <paramref name="bf16"/> (a kernel variant that reads or writes bf16 there).</summary>
    public BufferBinding Of(Tensor t, bool bf16) => Shaders.Slice(t, First * (t.Length / t.Shape[0]), Count * (t.Length / t.Shape[0]), bf16);
}
