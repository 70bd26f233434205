namespace Mamba2.Model.Ops;

/// <summary>Which shader computes a GEMM tile.</summary>
public enum GemmKernel
{
    /// <summary>nn/gemm.comp: BM x BN tiles staged through shared memory, a TM x TN block per invocation (GPUs).</summary>
    Shared,

    /// <summary>
    /// nn/gemm_lanes.comp: a workgroup of one subgroup computes BM x BN in registers, no shared memory or barriers
    /// (CPU drivers, whose subgroup is one SIMD vector). BM and BN are multiples of the subgroup size.
    /// </summary>
    Lanes,
}

/// <summary>Tile configuration of a GEMM kernel; chosen per device and problem by <see cref="Gemm.ChooseTile"/>.</summary>
public readonly record struct GemmTile(uint BM, uint BN, uint BK, uint TM, uint TN, GemmKernel Kernel = GemmKernel.Shared)
{
    /// <summary>A tile of the lanes kernel: <paramref name="bm"/> x <paramref name="bn"/> per workgroup.</summary>
    public static GemmTile Lanes(uint bm, uint bn) => new(bm, bn, 0, 0, 0, GemmKernel.Lanes);

    /// <summary>Invocations per workgroup of the shared kernel (the lanes kernel uses one subgroup).</summary>
    public uint Threads => Kernel == GemmKernel.Shared ? BM / TM * (BN / TN) : 0;

    public uint SharedBytes => Kernel == GemmKernel.Shared ? BK * (BM + 4 + BN + 4) * sizeof(float) : 0;

    public override string ToString() => Kernel == GemmKernel.Shared ? $"{BM}x{BN}x{BK}/{TM}x{TN}" : $"lanes:{BM}x{BN}";
}
