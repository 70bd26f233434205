using Mamba2.Vulkan;

namespace Mamba2.Cli;

/// <summary>Time of one op call, GPU-timestamped, and its peak extra device memory.</summary>
internal sealed record RowTiming(TimingStats Stats, double PeakMemoryBytes)
{
    public double MedianMs => Stats.MedianMs;

    public double MinMs => Stats.MinMs;

    public double MaxMs => Stats.MaxMs;
}

internal static class RowTimer
{
    /// <summary>
    /// <paramref name="warmup"/> then <paramref name="repeats"/> calls, each in its own submission between two
    /// timestamps and its outputs freed after it (device memory stays that of one call, however large the shape);
    /// the peak memory beyond what was allocated before is that of the first call.
    /// </summary>
    public static RowTiming Time(GpuDevice device, Func<CommandStream, IEnumerable<IDisposable>> record, int warmup, int repeats)
    {
        var before = device.Memory.AllocatedBytes;
        device.Memory.ResetPeak();
        var ms = new List<double>();
        double peak = 0;
        for (var i = 0; i < warmup + repeats; i++)
        {
            var made = new List<IDisposable>();
            using (var s = device.BeginStream())
            {
                try
                {
                    s.Timestamp("start");
                    made.AddRange(record(s));
                    s.Timestamp("end");
                    var t = s.Submit();
                    if (i >= warmup)
                    {
                        ms.Add(t.Milliseconds("start", "end"));
                    }
                }
                finally
                {
                    made.ForEach(m => m.Dispose());
                }
            }

            if (i == 0)
            {
                peak = device.Memory.PeakAllocatedBytes - before;
            }
        }

        return new RowTiming(TimingStats.Of(ms), peak);
    }
}
