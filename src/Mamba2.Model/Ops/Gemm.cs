using System.Runtime.InteropServices;
using Mamba2.Model.Tensors;
using Mamba2.Vulkan;

namespace Mamba2.Model.Ops;

/// <summary>
/// C = alpha * op(A) op(B) + beta * C in fp32, row-major, optionally batched (rank-3 tensors, batch first).
/// op(X) is X or its transpose. Used for projections and their input and weight gradients.
/// </summary>
public static class Gemm
{
    public static readonly GemmTile Large = new(128, 128, 16, 8, 8);
    public static readonly GemmTile Small = new(64, 64, 16, 4, 4);

    /// <summary>Environment variable of <see cref="OpTuning.Fp32SplitK"/>: <c>auto</c> or the parts K is split into.</summary>
    public const string SplitKVariable = "MAMBA2_GEMM_FP32_SPLIT_K";

    /// <summary>Environment variable that overrides the kernel chosen per device: <c>shared</c> or <c>lanes</c>.</summary>
    public const string KernelVariable = "MAMBA2_GEMM_KERNEL";

    [StructLayout(LayoutKind.Sequential)]
    internal readonly record struct Push(
        uint M, uint N, uint K, uint Lda, uint Ldb, uint Ldc, uint Batch, uint StrideA, uint StrideB, uint StrideC, float Alpha, float Beta, uint KLast);

    /// <summary>The grid (tiles walked with a stride within the device's limits) and push constants of every GEMM kernel.</summary>
    internal static ((uint X, uint Y, uint Z) Groups, Push Push) Launch(GpuDevice device, uint bm, uint bn, int m, int n, int k, int batch,
        bool batched, int lda, int ldb, float alpha, float beta)
    {
        var max = device.Capabilities.MaxWorkgroupCount;
        var tiles = (long)((m + bm - 1) / bm) * ((n + bn - 1) / bn);
        var groups = ((uint)Math.Min(tiles, max.X), (uint)Math.Min((tiles + max.X - 1) / max.X, max.Y), (uint)Math.Min(batch, max.Z));
        var push = new Push((uint)m, (uint)n, (uint)k, (uint)lda, (uint)ldb, (uint)n, (uint)batch,
            (uint)(batched ? (long)m * k : 0), (uint)(batched ? (long)k * n : 0), (uint)(batched ? (long)m * n : 0), alpha, beta, (uint)k);
        return (groups, push);
    }

    /// <summary>
    /// An unbatched product's launch (<see cref="Launch"/>) split along K: part s multiplies K columns [s ks, (s + 1)
    /// ks) as batch entry s (A and B strided along K) into its own partial C of the same M x N, the last the columns
    /// that remain (kLast); a fixed-order sum of the partials gives C (same inputs, same bits).
    /// </summary>
    internal static ((uint X, uint Y, uint Z) Groups, Push Push) SplitAlongK(GpuDevice device, (uint X, uint Y, uint Z) groups, Push push,
        int splits, int ks, bool transposeA, bool transposeB) =>
        ((groups.X, groups.Y, (uint)Math.Min(splits, device.Capabilities.MaxWorkgroupCount.Z)), push with
        {
            K = (uint)ks,
            KLast = (uint)(push.K - ((long)(splits - 1) * ks)),
            Batch = (uint)splits,
            StrideC = push.M * push.N,
            StrideA = (uint)(transposeA ? (long)ks * push.Lda : ks),
            StrideB = (uint)(transposeB ? ks : (long)ks * push.Ldb),
        });

    /// <summary>
    /// Records (or runs, without <paramref name="stream"/>) c = alpha * op(a) op(b) + beta * c.
    /// Shapes: a (M, K) or (K, M) when <paramref name="transposeA"/>; b (K, N) or (N, K) when <paramref name="transposeB"/>;
    /// c (M, N); with a leading batch dimension on all three for batched products. <paramref name="operands"/>
    /// other than fp32 run on tensor cores (<see cref="TensorCoreGemm"/>; <paramref name="api"/> and
    /// <paramref name="tensorTile"/> pick its variant and tile) and throw <see cref="MissingFeatureException"/>
    /// where neither the build nor the device has them (<see cref="TensorCoreGemm.IsAvailable"/> asks first).
    /// <paramref name="precision"/> is the policy's name for the same choice (fp32-fast: f16 operands converted
    /// and scaled first; bf16: bf16 operands), what modules pass. <paramref name="a"/> and <paramref name="b"/> may
    /// be <see cref="PackedOperand"/>s of the same operand type (<see cref="Pack"/>): the product then reads them as
    /// they are, and converts only an fp32 tensor given beside one. <paramref name="c"/> may be a bf16 tensor for a
    /// tensor-core product (KHR; <see cref="TensorCoreGemm.WritesBf16"/>): each element is the fp32 sum rounded once.
    /// </summary>
    public static void Run(GemmInput a, GemmInput b, Tensor c, bool transposeA = false, bool transposeB = false,
        float alpha = 1f, float beta = 0f, CommandStream? stream = null, GemmTile? tile = null,
        GemmOperands operands = GemmOperands.Fp32, TensorCoreApi api = TensorCoreApi.Auto, TensorCoreTile? tensorTile = null,
        OperandStaging staging = OperandStaging.Auto, Precision precision = Precision.Fp32)
    {
        const string op = "Gemm";
        if (precision != Precision.Fp32)
        {
            if (operands != GemmOperands.Fp32)
            {
                throw new ArgumentException($"{op}: give precision ({precision.Name()}) or operands ({operands}), not both.", nameof(precision));
            }

            (operands, var s) = PrecisionPolicy.GemmOf(precision, c.Device);
            staging = staging == OperandStaging.Auto ? s : staging;
        }

        var (sa, sb) = (a.Shaped, b.Shaped);
        ShapeOps.ExpectSameDevice(op, sa, sb, c);
        var (m, n, k, batch, batched) = Dims(op, sa, sb, transposeA, transposeB);
        ShapeOps.ExpectRank(c, nameof(c), op, sa.Rank);
        ShapeOps.Expect(c, nameof(c), $"{op} (op(a) is {m}x{k}, op(b) is {k}x{n})", OutputShape(m, n, batch, batched));
        foreach (var (packed, name) in new[] { (a.Packed, nameof(a)), (b.Packed, nameof(b)) })
        {
            if (packed is not null && packed.Operands != operands)
            {
                throw new ArgumentException(operands == GemmOperands.Fp32
                    ? $"{op}: {name} ({packed}) is packed for tensor cores; an fp32 product takes the fp32 tensor."
                    : $"{op}: {name} ({packed}) is packed as {packed.Operands}; this product takes {operands} operands.", name);
            }
        }

        if (c.DType != TensorDType.F32 && operands == GemmOperands.Fp32)
        {
            throw new ArgumentException($"{op}: {c} is {c.DType.Name()}; only tensor-core products (precision fp32-fast or bf16) write bf16.", nameof(c));
        }

        if (operands != GemmOperands.Fp32)
        {
            if (a.Packed is not null || b.Packed is not null)
            {
                staging = OperandStaging.Converted;   // a packed operand is what the converted variant reads
            }

            TensorCoreGemm.Run(a, b, c, m, n, k, batch, batched, transposeA, transposeB, alpha, beta, operands, api, stream, tensorTile, staging);
            return;
        }

        (var ta, var tb) = (a.Tensor!, b.Tensor!);
        var device = ta.Device;
        var t = tile ?? ChooseTile(device, m, n);
        ValidateTile(device, t);
        var w = device.Capabilities.SubgroupSize;
        var kernel = t.Kernel == GemmKernel.Shared
            ? device.GetKernel(Shaders.Gemm, new GemmSpec(t.Threads, t.BM, t.BN, t.BK, t.TM, t.TN, transposeA, transposeB))
            : device.GetKernel(Shaders.GemmLanes, new GemmLanesSpec(w, t.BM / w, t.BN / w, transposeA, transposeB));
        var (groups, push) = Launch(device, t.BM, t.BN, m, n, k, batch, batched, ta.Shape[^1], tb.Shape[^1], alpha, beta);
        var splits = batched || beta != 0f ? 1 : Fp32Splits(device, t, m, n, k);
        if (splits > 1)
        {
            // Equal parts (the fp32 kernels read one K for every batch entry), summed in a fixed order after.
            (groups, push) = SplitAlongK(device, groups, push, splits, k / splits, transposeA, transposeB);
        }

        Shaders.EnsureBindable(op, ta, tb, c);
        Shaders.RunIn(device, stream, s =>
        {
            var partials = splits > 1 ? s.Own(device.CreateBuffer<float>((long)splits * m * n, "gemm.split_k_partials")) : null;
            s.Dispatch(kernel, groups, push, ta.Buffer, tb.Buffer, partials ?? c.Buffer);
            if (partials is not null)
            {
                Reductions.Sum(s, partials, c.Buffer, (uint)splits, (uint)((long)m * n));
            }
        });
    }

    /// <summary>
    /// The parts an unbatched fp32 product on <paramref name="tile"/> splits K into (<see cref="OpTuning.Fp32SplitK"/>):
    /// by default the tensor-core GEMM's choice for the tile count on the shared-memory tiles (the weight gradients'
    /// few output tiles: 1.5x faster on an H100, docs/PERF.md) and none on the lanes kernel, where it was not timed;
    /// <c>auto</c> that choice on either, a number that many parts; always only parts that divide K and whose
    /// partials fit one binding.
    /// </summary>
    public static int Fp32Splits(GpuDevice device, GemmTile tile, int m, int n, int k)
    {
        var asked = OpTuning.Of(device).Fp32SplitK;
        if (asked is null && tile.Kernel != GemmKernel.Shared)
        {
            return 1;
        }

        var tiles = (long)((m + tile.BM - 1) / tile.BM) * ((n + tile.BN - 1) / tile.BN);
        var parts = asked is null or 0 ? TensorCoreGemm.SplitsFor(tiles, k, 1) : asked.Value;
        while (parts > 1 && (k % parts != 0 || (ulong)parts * (ulong)m * (ulong)n * sizeof(float) > device.Capabilities.MaxStorageBufferRange))
        {
            parts--;
        }

        return parts;
    }

    /// <summary>
    /// The product's sizes from its operands, checked: a (M, K) or (K, M), b (K, N) or (N, K), both with a leading
    /// batch dimension or neither.
    /// </summary>
    private static (int M, int N, int K, int Batch, bool Batched) Dims(string op, IShapedArray a, IShapedArray b, bool transposeA, bool transposeB)
    {
        ShapeOps.ExpectRank(a, nameof(a), op, 2, 3);
        ShapeOps.ExpectRank(b, nameof(b), op, a.Rank);
        var batched = a.Rank == 3;
        var batch = batched ? a.Shape[0] : 1;
        int Dim(IShapedArray t, int i) => t.Shape[batched ? i + 1 : i];
        var m = transposeA ? Dim(a, 1) : Dim(a, 0);
        var k = transposeA ? Dim(a, 0) : Dim(a, 1);
        var n = transposeB ? Dim(b, 0) : Dim(b, 1);
        ShapeOps.Expect(b, nameof(b), $"{op} (op(a) is {m}x{k})", transposeB ? OutputShape(n, k, batch, batched) : OutputShape(k, n, batch, batched));
        return (m, n, k, batch, batched);
    }

    /// <summary>(rows, cols), with the batch first where there is one.</summary>
    private static int[] OutputShape(int rows, int cols, int batch, bool batched) => batched ? [batch, rows, cols] : [rows, cols];

    /// <summary>
    /// alpha op(a) op(b) in <paramref name="precision"/> (fp32-fast or bf16), returned as 16-bit operands of that
    /// precision (<see cref="PackedOperand"/>: bf16, or f16 scaled by a power of two where the precision takes f16) for
    /// later products to read, or <see cref="PackedOperand.ToArray"/> to read back: the bf16 (or f16) output of the
    /// tensor-core GEMM. Shapes as <see cref="Run"/>'s, batched too; the product is accumulated in fp32 and rounded once,
    /// in a pass after it. The caller owns the result (<see cref="CommandStream.Own"/> for a stream's scratch).
    /// </summary>
    public static PackedOperand RunPacked(GemmInput a, GemmInput b, Precision precision, bool transposeA = false, bool transposeB = false,
        float alpha = 1f, CommandStream? stream = null)
    {
        if (precision == Precision.Fp32)
        {
            throw new ArgumentException("Gemm.RunPacked: fp32 products write fp32 tensors; use Run.", nameof(precision));
        }

        var (sa, sb) = (a.Shaped, b.Shaped);
        ShapeOps.ExpectSameDevice("Gemm.RunPacked", sa, sb);
        var (m, n, _, batch, batched) = Dims("Gemm.RunPacked", sa, sb, transposeA, transposeB);
        var shape = OutputShape(m, n, batch, batched);
        var device = sa.Device;
        if (stream is not null)
        {
            // Scratch of the stream: freed once what it recorded has run, whatever happens after this.
            var product = stream.Own(Tensor.Empty(device, "gemm.product", shape));
            Run(a, b, product, transposeA, transposeB, alpha, stream: stream, precision: precision);
            return Pack(product, precision, stream);
        }

        using (var product = Tensor.Empty(device, "gemm.product", shape))
        {
            Run(a, b, product, transposeA, transposeB, alpha, precision: precision);
            return Pack(product, precision);
        }
    }

    /// <summary>
    /// <paramref name="x"/> rounded to the 16-bit operands <paramref name="precision"/>'s products take (f16 scaled
    /// by its power of two, or bf16), for <see cref="Run"/> to read in place of x in any number of products: the
    /// caller owns the copy (<see cref="CommandStream.Own"/> for scratch of a stream). Recorded into
    /// <paramref name="stream"/> (or run now without one); x must not change while the copy is in use.
    /// </summary>
    public static PackedOperand Pack(Tensor x, Precision precision, CommandStream? stream = null)
    {
        if (precision == Precision.Fp32)
        {
            throw new ArgumentException($"Gemm.Pack: {x.Name} would be packed for fp32 products, which take the fp32 tensor itself.", nameof(precision));
        }

        var (operands, _) = PrecisionPolicy.GemmOf(precision, x.Device);
        if (TensorCoreGemm.WhyNot(x.Device, operands, TensorCoreApi.Auto, OperandStaging.Converted) is { } why)
        {
            throw new MissingFeatureException(why + ".");
        }

        return TensorCoreGemm.Pack(x, operands, stream);
    }

    /// <summary>
    /// <paramref name="x"/> packed again into <paramref name="into"/> (same shape, its operand type): a block loop's
    /// packed scratch reused for the next block. Products recorded before read the old values (the stream orders them).
    /// </summary>
    public static void PackInto(Tensor x, PackedOperand into, CommandStream? stream = null)
    {
        ShapeOps.ExpectSameDevice("Gemm.PackInto", x, into);
        ShapeOps.Expect(into, nameof(into), $"Gemm.PackInto ({x} given)", [.. x.Shape]);
        TensorCoreGemm.PackInto(x, into, stream);
    }

    /// <summary>
    /// On CPU devices the lanes kernel; on others the large shared tile where the problem fills it and the device's
    /// shared memory and invocation limits allow, else the small one. <see cref="KernelVariable"/> overrides the kernel.
    /// </summary>
    public static GemmTile ChooseTile(GpuDevice device, int m, int n)
    {
        var lanes = OpTuning.Of(device).GemmKernel is { } forced ? forced == GemmKernel.Lanes : device.Info.IsCpu;
        if (lanes)
        {
            return LanesTile(device, n);
        }

        var caps = device.Capabilities;
        var fits = Large.SharedBytes <= caps.MaxSharedMemoryBytes && Large.Threads <= caps.MaxWorkgroupInvocationsX;
        return fits && m >= Large.BM && n >= Large.BN ? Large : Small;
    }

    /// <summary>
    /// The lanes kernel's tile: one subgroup's worth of rows, 4 or 3 columns per lane, whichever pads
    /// <paramref name="n"/> less (4 on a tie). On llvmpipe 4 (32 accumulators) measured best, 3 close behind,
    /// 2 row groups or 2 columns per lane slower (docs/PERF.md).
    /// </summary>
    public static GemmTile LanesTile(GpuDevice device, int n)
    {
        var w = device.Capabilities.SubgroupSize;
        long Padded(uint perLane) => (n + perLane * w - 1) / (perLane * w) * perLane * w;
        var cols = Padded(3) < Padded(4) ? 3u : 4u;
        return GemmTile.Lanes(w, cols * w);
    }

    private static void ValidateTile(GpuDevice device, GemmTile t)
    {
        var caps = device.Capabilities;
        if (t.Kernel == GemmKernel.Lanes)
        {
            var w = caps.SubgroupSize;
            if (t.BM == 0 || t.BN == 0 || t.BM % w != 0 || t.BN % w != 0 || w > caps.MaxWorkgroupInvocationsX)
            {
                throw new ArgumentException($"Gemm tile {t}: BM and BN must be nonzero multiples of {device.Name}'s subgroup size {w}.", "tile");
            }

            return;
        }

        if (t.TM == 0 || t.TN == 0 || t.TM % 4 != 0 || t.TN % 4 != 0 || t.BM % t.TM != 0 || t.BN % t.TN != 0 || t.BK == 0)
        {
            throw new ArgumentException($"Gemm tile {t}: TM and TN must be multiples of 4 dividing BM and BN, BK nonzero.", "tile");
        }

        if (t.SharedBytes > caps.MaxSharedMemoryBytes || t.Threads > caps.MaxWorkgroupInvocationsX)
        {
            throw new ArgumentException(
                $"Gemm tile {t} needs {t.SharedBytes} bytes of shared memory and {t.Threads} invocations; {device.Name} allows {caps.MaxSharedMemoryBytes} and {caps.MaxWorkgroupInvocationsX}.",
                "tile");
        }
    }
}
