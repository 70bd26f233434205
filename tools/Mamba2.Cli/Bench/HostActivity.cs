using Mamba2.Vulkan;

namespace Mamba2.Cli;

/// <summary>
/// What the host did over some steps that the device may have waited for: managed allocations, .NET collections and
/// their pause, driver allocations. Taken at the start (<see cref="Start"/>), said per step (<see cref="PerStep"/>).
/// </summary>
internal sealed record HostActivity(int Gen0, int Gen1, int Gen2, TimeSpan Pause, long ManagedBytes, long DriverAllocations)
{
    public static HostActivity Start(GpuDevice device) => new(GC.CollectionCount(0), GC.CollectionCount(1), GC.CollectionCount(2),
        GC.GetTotalPauseDuration(), GC.GetTotalAllocatedBytes(), device.Memory.DriverAllocations);

    /// <summary>Since <see cref="Start"/>, per step of <paramref name="steps"/>, in words; with the last collection's kind.</summary>
    public string PerStep(GpuDevice device, int steps)
    {
        double n = Math.Max(1, steps);
        return $"{(GC.GetTotalAllocatedBytes() - ManagedBytes) / 1048576.0 / n:F1} MiB allocated, .NET collections (gen0 / 1 / 2) "
            + $"{(GC.CollectionCount(0) - Gen0) / n:F1} / {(GC.CollectionCount(1) - Gen1) / n:F1} / {(GC.CollectionCount(2) - Gen2) / n:F1}, "
            + $"{(GC.GetTotalPauseDuration() - Pause).TotalMilliseconds / n:F2} ms paused, {(device.Memory.DriverAllocations - DriverAllocations) / n:F1} driver allocations; "
            + LastCollection();
    }

    private static string LastCollection()
    {
        var info = GC.GetGCMemoryInfo(GCKind.Any);
        return info.Index == 0 ? "no collection yet"
            : $"the last collection: gen{info.Generation}{(info.Concurrent ? " background" : "")}{(info.Compacted ? " compacting" : "")}, "
              + $"{string.Join(" + ", info.PauseDurations.ToArray().Where(d => d > TimeSpan.Zero).Select(d => $"{d.TotalMilliseconds:F2} ms"))} paused, "
              + $"{info.PromotedBytes / 1048576.0:F1} MiB promoted, heap {info.HeapSizeBytes / 1048576.0:F0} MiB";
    }
}
