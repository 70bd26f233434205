namespace Mamba2.Vulkan;

/// <summary>Median, min and max of GPU-timestamped repetitions, in milliseconds.</summary>
public sealed record TimingStats(double MedianMs, double MinMs, double MaxMs, int Repeats)
{
    public static TimingStats Of(IEnumerable<double> milliseconds)
    {
        var ms = milliseconds.Order().ToArray();
        if (ms.Length == 0)
        {
            throw new ArgumentException("TimingStats: no timed runs.", nameof(milliseconds));
        }

        var median = ms.Length % 2 == 1 ? ms[ms.Length / 2] : (ms[ms.Length / 2 - 1] + ms[ms.Length / 2]) / 2;
        return new TimingStats(median, ms[0], ms[^1], ms.Length);
    }
}

/// <summary>Repeated GPU work timed with timestamps.</summary>
public static class GpuTiming
{
    /// <summary>
    /// Records <paramref name="prepare"/>, <paramref name="warmup"/> untimed then <paramref name="repeats"/> timed runs
    /// of <paramref name="record"/> in one submission, a full barrier and a timestamp between consecutive runs, and
    /// reports the distribution of per-run GPU time.
    /// </summary>
    public static TimingStats Measure(GpuDevice device, Action<CommandStream> record, int warmup, int repeats, Action<CommandStream>? prepare = null)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentOutOfRangeException.ThrowIfLessThan(repeats, 1);
        using var s = device.BeginStream();
        prepare?.Invoke(s);
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
        return TimingStats.Of(Enumerable.Range(0, repeats).Select(i => t.Milliseconds($"{i}", $"{i + 1}")));
    }
}
