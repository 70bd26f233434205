using Mamba2.Vulkan;

namespace Mamba2.Cli;

/// <summary>Median, min and max of GPU-timestamped repetitions.</summary>
internal sealed record TimingStats(double MedianMs, double MinMs, double MaxMs, int Repeats);

internal static class GpuTiming
{
    /// <summary>
    /// Records <paramref name="warmup"/> untimed then <paramref name="repeats"/> timed runs of <paramref name="record"/>
    /// in one submission, a full barrier and a timestamp between consecutive runs, and reports the distribution of per-run GPU time.
    /// </summary>
    public static TimingStats Measure(GpuDevice device, Action<CommandStream> record, int warmup, int repeats)
    {
        using var s = device.BeginStream();
        for (var i = 0; i < warmup; i++)
        {
            record(s);
        }

        for (var i = 0; i < repeats; i++)
        {
            s.Barrier();
            s.Timestamp($"{i}");
            record(s);
        }

        s.Timestamp($"{repeats}");
        var t = s.Submit();
        var ms = Enumerable.Range(0, repeats).Select(i => t.Milliseconds($"{i}", $"{i + 1}")).Order().ToArray();
        var median = repeats % 2 == 1 ? ms[repeats / 2] : (ms[repeats / 2 - 1] + ms[repeats / 2]) / 2;
        return new TimingStats(median, ms[0], ms[^1], repeats);
    }
}
