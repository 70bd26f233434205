namespace Mamba2.Cli;

/// <summary>
/// What an op is charged (docs/DESIGN.md): bytes = the tensors it must read and write once; flops = 2 x the chunked
/// algorithm's multiply-adds. Every implementation of an op is charged the same, so GB/s and TFLOP/s compare them.
/// </summary>
internal static class BenchCost
{
    /// <summary>
    /// SSD: read x, dt, B, C (and z when gated), write y; the backward reads dy and the inputs again and writes a
    /// gradient of each. x, B, C, z and y take <paramref name="elementBytes"/> each (2 for bf16 tensors), dt 4.
    /// </summary>
    public static double SsdBytes(BenchShape s, bool backward, bool gated = false, int elementBytes = 4)
    {
        var perToken = elementBytes * ((gated ? 3.0 : 2.0) * s.Heads * s.HeadDim + 2.0 * s.Groups * s.DState) + 4.0 * s.Heads;
        return s.Tokens * perToken * (backward ? 3.0 : 1.0);
    }

    /// <summary>
    /// SSD flops: per token and head, the intra-chunk triangle (Q p / 2), the state terms (2 n p) and the C.B^T tile
    /// shared by the heads of a group; the backward about 2.5 times the forward; a bidirectional pass two scans' worth.
    /// </summary>
    public static double SsdFlops(BenchShape s, bool backward, bool bidirectional)
    {
        var macs = s.Tokens * s.Heads * (s.Chunk * s.HeadDim / 2.0 + 2.0 * s.DState * s.HeadDim + s.Chunk * s.DState / (2.0 * (s.Heads / s.Groups)));
        return 2 * macs * (backward ? 3.5 : 1.0) * (bidirectional ? 2 : 1);
    }

    /// <summary>GEMM y = a w^T (m x k by n x k): 2 m n k flops, its three operands once.</summary>
    public static (double Bytes, double Flops) Gemm(long m, long n, long k) => (4.0 * (m * k + n * k + m * n), 2.0 * m * n * k);
}
