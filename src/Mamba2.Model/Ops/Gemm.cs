using System.Runtime.InteropServices;
using Mamba2.Model.Tensors;
using Mamba2.Vulkan;

namespace Mamba2.Model.Ops;

/// <summary>Tile configuration of nn/gemm.comp; chosen per device and problem by <see cref="Gemm.ChooseTile"/>.</summary>
public readonly record struct GemmTile(uint BM, uint BN, uint BK, uint TM, uint TN)
{
    public uint Threads => BM / TM * (BN / TN);

    public uint SharedBytes => BK * (BM + 4 + BN + 4) * sizeof(float);

    public override string ToString() => $"{BM}x{BN}x{BK}/{TM}x{TN}";
}

/// <summary>
/// C = alpha * op(A) op(B) + beta * C in fp32, row-major, optionally batched (rank-3 tensors, batch first).
/// op(X) is X or its transpose. Used for projections and their input and weight gradients.
/// </summary>
public static class Gemm
{
    public static readonly GemmTile Large = new(128, 128, 16, 8, 8);
    public static readonly GemmTile Small = new(64, 64, 16, 4, 4);

    [StructLayout(LayoutKind.Sequential)]
    private readonly record struct Push(
        uint M, uint N, uint K, uint Lda, uint Ldb, uint Ldc, uint Batch, uint StrideA, uint StrideB, uint StrideC, float Alpha, float Beta);

    /// <summary>
    /// Records (or runs, without <paramref name="stream"/>) c = alpha * op(a) op(b) + beta * c.
    /// Shapes: a (M, K) or (K, M) when <paramref name="transposeA"/>; b (K, N) or (N, K) when <paramref name="transposeB"/>;
    /// c (M, N); with a leading batch dimension on all three for batched products.
    /// </summary>
    public static void Run(Tensor a, Tensor b, Tensor c, bool transposeA = false, bool transposeB = false,
        float alpha = 1f, float beta = 0f, CommandStream? stream = null, GemmTile? tile = null)
    {
        const string op = "Gemm";
        ShapeOps.ExpectSameDevice(op, a, b, c);
        ShapeOps.ExpectRank(a, nameof(a), op, 2, 3);
        ShapeOps.ExpectRank(b, nameof(b), op, a.Rank);
        ShapeOps.ExpectRank(c, nameof(c), op, a.Rank);
        var batched = a.Rank == 3;
        var batch = batched ? a.Shape[0] : 1;
        int Dim(Tensor t, int i) => t.Shape[batched ? i + 1 : i];
        var m = transposeA ? Dim(a, 1) : Dim(a, 0);
        var k = transposeA ? Dim(a, 0) : Dim(a, 1);
        var n = transposeB ? Dim(b, 0) : Dim(b, 1);
        int[] Batched(int r, int cols) => batched ? [batch, r, cols] : [r, cols];
        ShapeOps.Expect(b, nameof(b), $"{op} (op(a) is {m}x{k})", transposeB ? Batched(n, k) : Batched(k, n));
        ShapeOps.Expect(c, nameof(c), $"{op} (op(a) is {m}x{k}, op(b) is {k}x{n})", Batched(m, n));

        var device = a.Device;
        var t = tile ?? ChooseTile(device, m, n);
        ValidateTile(device, t);
        var kernel = device.GetKernel(Shaders.Gemm, [t.Threads, t.BM, t.BN, t.BK, t.TM, t.TN, transposeA ? 1u : 0u, transposeB ? 1u : 0u]);
        var max = device.Capabilities.MaxWorkgroupCount;
        var tiles = (long)((m + t.BM - 1) / t.BM) * ((n + t.BN - 1) / t.BN);
        var groups = ((uint)Math.Min(tiles, max.X), (uint)Math.Min((tiles + max.X - 1) / max.X, max.Y), (uint)Math.Min(batch, max.Z));
        var push = new Push((uint)m, (uint)n, (uint)k, (uint)Dim(a, 1), (uint)Dim(b, 1), (uint)n, (uint)batch,
            (uint)(batched ? (long)m * k : 0), (uint)(batched ? (long)k * n : 0), (uint)(batched ? (long)m * n : 0), alpha, beta);
        Shaders.EnsureBindable(op, a, b, c);
        Shaders.RunIn(device, stream, s => s.Dispatch(kernel, groups, push, a.Buffer, b.Buffer, c.Buffer));
    }

    /// <summary>The large tile where the problem fills it and the device's shared memory and invocation limits allow, else the small one.</summary>
    public static GemmTile ChooseTile(GpuDevice device, int m, int n)
    {
        var caps = device.Capabilities;
        var fits = Large.SharedBytes <= caps.MaxSharedMemoryBytes && Large.Threads <= caps.MaxWorkgroupInvocations;
        return fits && m >= Large.BM && n >= Large.BN ? Large : Small;
    }

    private static void ValidateTile(GpuDevice device, GemmTile t)
    {
        var caps = device.Capabilities;
        if (t.BM % t.TM != 0 || t.BN % t.TN != 0 || t.BM % 4 != 0)
        {
            throw new ArgumentException($"Gemm tile {t}: BM must divide by TM and 4, BN by TN.", "tile");
        }

        if (t.SharedBytes > caps.MaxSharedMemoryBytes || t.Threads > Math.Min(caps.MaxWorkgroupInvocations, caps.MaxWorkgroupSize.X))
        {
            throw new ArgumentException(
                $"Gemm tile {t} needs {t.SharedBytes} bytes of shared memory and {t.Threads} invocations; {device.Name} allows {caps.MaxSharedMemoryBytes} and {caps.MaxWorkgroupInvocations}.",
                "tile");
        }
    }
}
