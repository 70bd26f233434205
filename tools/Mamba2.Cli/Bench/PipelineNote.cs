using Mamba2.Vulkan;

namespace Mamba2.Cli;

/// <summary>
/// Says when a measurement's wall time went into the driver building pipelines (the first use of a kernel
/// specialization on a machine: about a minute for the SSD backward's kernels on an H200), so a slow first run is
/// not taken for a hang or for the op's speed.
/// </summary>
internal static class PipelineNote
{
    /// <summary>" (first use: ...)" when pipelines built since <paramref name="before"/> took a second or more, else "".</summary>
    public static string Since(GpuDevice device, PipelineBuilds before)
    {
        var now = device.PipelineBuilds;
        var built = now.Time - before.Time;
        return built.TotalSeconds < 1 ? ""
            : $" (first use: the driver built {now.Count - before.Count} pipelines in {built.TotalSeconds:F1} s{(device.PipelineCacheDirectory is { } dir ? $", kept in {dir} for later runs" : "")})";
    }
}
