using Mamba2.Vulkan;

namespace Mamba2.Model.Ops.Ssd;

/// <summary>How the causal SSD scans run; both paths compute the same result (the tests hold each to it).</summary>
public enum SsdPath
{
    /// <summary>MAMBA2_SSD_PATH when set (tiled or recurrent), otherwise recurrent on a CPU device and tiled elsewhere.</summary>
    Auto,

    /// <summary>The chunked form: per-chunk matrix products tiled through shared memory (GPUs).</summary>
    Tiled,

    /// <summary>
    /// The recurrent form: one invocation per state row (or column) walking the sequence, no shared memory or
    /// barriers (CPU drivers such as lavapipe, where the tiled kernels run ~100x below their arithmetic; docs/PERF.md).
    /// </summary>
    Recurrent,
}

/// <summary>Resolves <see cref="SsdPath.Auto"/> for a device.</summary>
public static class SsdPaths
{
    public const string EnvironmentVariable = "MAMBA2_SSD_PATH";

    /// <summary>The path a scan takes; products in a tensor-core precision always take the tiled path.</summary>
    public static SsdPath Resolve(GpuDevice device, SsdPath requested, Precision precision = Precision.Fp32)
    {
        if (requested != SsdPath.Auto)
        {
            return requested;
        }

        if (precision != Precision.Fp32)
        {
            return SsdPath.Tiled;
        }

        return OpTuning.Of(device).SsdPath switch
        {
            SsdPath.Auto => device.Info.IsCpu ? SsdPath.Recurrent : SsdPath.Tiled,
            var forced => forced,
        };
    }
}
