using Mamba2.Model.Ops;
using Mamba2.Vulkan;

namespace Mamba2.Cli;

/// <summary>
/// One measured row: an op, whose implementation, forward or forward + backward, the shape, GPU time (median, min,
/// max over the repeats), the bytes and flops it is charged (docs/DESIGN.md's counting: the minimum traffic and the
/// algorithm's multiply-adds, the same for every implementation of an op) and its peak extra device memory.
/// </summary>
internal sealed record BenchRow(string Op, string Impl, string Pass, BenchShape Shape, double MedianMs, double MinMs, double MaxMs,
    double Bytes, double Flops, double PeakMemoryBytes)
{
    /// <summary>An implementation's name with the precision appended when it is not exact fp32 ("ours fp32-fast").</summary>
    public static string WithPrecision(string impl, Precision precision) => precision == Precision.Fp32 ? impl : $"{impl} {precision.Name()}";

    /// <summary>A row from a <see cref="RowTimer"/> timing; pass "fwd+bwd" when <paramref name="backward"/>, else "fwd".</summary>
    public static BenchRow Of(string op, string impl, bool backward, BenchShape shape, RowTiming t, double bytes, double flops) =>
        new(op, impl, backward ? "fwd+bwd" : "fwd", shape, t.MedianMs, t.MinMs, t.MaxMs, bytes, flops, t.PeakMemoryBytes);

    public double GBps => Bytes / MedianMs / 1e6;

    public double Tflops => Flops / MedianMs / 1e9;

    public string Key => $"{Op} | {Impl} | {Pass} | {Shape}";

    public Dictionary<string, object> ToJson(DeviceCeilings c) => new()
    {
        ["op"] = Op,
        ["impl"] = Impl,
        ["pass"] = Pass,
        ["shape"] = Shape.ToString(),
        ["batch"] = Shape.Batch,
        ["seqlen"] = Shape.SeqLen,
        ["heads"] = Shape.Heads,
        ["headdim"] = Shape.HeadDim,
        ["groups"] = Shape.Groups,
        ["dstate"] = Shape.DState,
        ["chunk"] = Shape.Chunk,
        ["median_ms"] = MedianMs,
        ["min_ms"] = MinMs,
        ["max_ms"] = MaxMs,
        ["gb_per_s"] = GBps,
        ["tflop_per_s"] = Tflops,
        ["pct_bandwidth"] = 100 * GBps / c.CopyGBps,
        ["pct_fp32"] = 100 * Tflops / c.Fp32Tflops,
        ["peak_memory_mib"] = PeakMemoryBytes / 1048576.0,
    };
}
