using Mamba2.Vulkan;

namespace Mamba2.Cli;

/// <summary>
/// With MAMBA2_VK_PIPELINE_STATS=1, what the driver made of each kernel a bench built (registers a lane decide how
/// many workgroups an SM holds), on stderr so tables stay parseable.
/// </summary>
internal static class KernelStatisticsReport
{
    public static void Print(GpuDevice device)
    {
        foreach (var k in device.KernelStatistics)
        {
            Console.Error.WriteLine($"pipeline: {k}");
        }
    }
}
