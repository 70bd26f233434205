using Mamba2.Vulkan;

namespace Mamba2.Cli;

/// <summary>
/// Time of one op call, GPU-timestamped, and its peak extra device memory; the timed calls' GPU times in order and
/// the median host time to record one (the GPU idles meanwhile: between calls its clocks may drop).
/// </summary>
internal sealed record RowTiming(TimingStats Stats, double PeakMemoryBytes, IReadOnlyList<double> SamplesMs, double HostRecordMs)
{
    public double MedianMs => Stats.MedianMs;

    public double MinMs => Stats.MinMs;

    public double MaxMs => Stats.MaxMs;
}

internal static class RowTimer
{
    /// <summary>Warm-up also lasts at least this long (when any is asked for), so clocks settle after host work.</summary>
    private static readonly TimeSpan MinWarmup = TimeSpan.FromMilliseconds(100);

    /// <summary>
    /// FMA work on a GPU before each row (when any warm-up is asked for). A row's own warm-up calls are not enough
    /// at small shapes: their GPU work is short next to the host's between them, and after a few such rows an H200
    /// timed the same calls 4.5x slower than right after a spin-up (the bimamba preset at L 8192: shift form fwd+bwd
    /// 3.77 against 0.87 ms), the clocks of a mostly idle GPU.
    /// </summary>
    private static readonly TimeSpan RowSpinUp = TimeSpan.FromMilliseconds(250);

    /// <summary>A warm-up longer than this spins the GPU up again before the timed calls.</summary>
    private static readonly TimeSpan SlowWarmup = TimeSpan.FromSeconds(1);

    /// <summary>
    /// A spin-up (<see cref="RowSpinUp"/>), at least <paramref name="warmup"/> calls (and <see cref="MinWarmup"/>),
    /// another spin-up when those took over <see cref="SlowWarmup"/>, then <paramref name="repeats"/> calls, each in
    /// its own submission between two timestamps and its outputs freed after it (device memory stays that of one
    /// call, however large the shape); the peak memory beyond what was allocated before is that of the first call.
    /// </summary>
    public static RowTiming Time(GpuDevice device, Func<CommandStream, IEnumerable<IDisposable>> record, int warmup, int repeats)
    {
        if (warmup > 0 && !device.Info.IsCpu)
        {
            DeviceCeilings.SpinUp(device, RowSpinUp);
        }

        var before = device.Memory.AllocatedBytes;
        device.Memory.ResetPeak();
        var ms = new List<double>();
        var host = new List<double>();
        double peak = 0;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var spunUpAfterWarmup = false;
        for (var i = 0; ms.Count < repeats; i++)
        {
            var warming = i < warmup || (warmup > 0 && clock.Elapsed < MinWarmup);
            if (!warming && !spunUpAfterWarmup && warmup > 0 && !device.Info.IsCpu && clock.Elapsed > SlowWarmup)
            {
                // A long warm-up (the driver building pipelines: a minute for the SSD backward on an H200) leaves the
                // GPU at idle clocks: an H200 then timed the calls 4.8x slower (48.9 against 10.2 ms).
                DeviceCeilings.SpinUp(device, RowSpinUp);
            }

            spunUpAfterWarmup |= !warming;
            var made = new List<IDisposable>();
            using (var s = device.BeginStream())
            {
                try
                {
                    var recording = System.Diagnostics.Stopwatch.StartNew();
                    s.Timestamp("start");
                    made.AddRange(record(s));
                    s.Timestamp("end");
                    var recorded = recording.Elapsed.TotalMilliseconds;
                    var t = s.Submit();
                    if (!warming)
                    {
                        ms.Add(t.Milliseconds("start", "end"));
                        host.Add(recorded);
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

        return new RowTiming(TimingStats.Of(ms), peak, ms, TimingStats.Of(host).MedianMs);
    }
}
