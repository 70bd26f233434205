namespace Mamba2.Vulkan;

/// <summary>How to open a device. <see cref="FromEnvironment"/> fills unset fields from MAMBA2_VK_* variables.</summary>
public sealed record VulkanOptions
{
    /// <summary>Enable VK_LAYER_KHRONOS_validation and collect its messages (env MAMBA2_VK_VALIDATION=1).</summary>
    public bool Validation { get; init; }

    /// <summary>Also enable the layer's synchronization validation (catches missing barriers). Implies <see cref="Validation"/>.</summary>
    public bool SynchronizationValidation { get; init; }

    /// <summary>Device index (as listed by <c>mamba2 devices</c>) or a case-insensitive name substring (env MAMBA2_VK_DEVICE).</summary>
    public string? Device { get; init; }

    /// <summary>
    /// Without <see cref="Device"/>: take the n-th device of the preferred kind (round robin) instead of the largest,
    /// so the processes of a multi-process job on one host spread over its GPUs (their local rank).
    /// </summary>
    public int DeviceSlot { get; init; }

    /// <summary>Folder for the on-disk pipeline cache, one file per device and driver; null disables it (env MAMBA2_VK_PIPELINE_CACHE, "off" to disable).</summary>
    public string? PipelineCacheDirectory { get; init; }

    /// <summary>
    /// Ask the driver for each pipeline's statistics (registers, shared memory, ...; VK_KHR_pipeline_executable_properties)
    /// as it is built: <see cref="GpuDevice.KernelStatistics"/> (env MAMBA2_VK_PIPELINE_STATS=1). Off by default: the
    /// driver may compile differently while capturing them.
    /// </summary>
    public bool PipelineStatistics { get; init; }

    /// <summary>
    /// Fill every new host-visible buffer (every buffer on a CPU driver or integrated GPU) with 0xFF bytes, NaN as
    /// floats, before anything uses it, so a kernel that reads what nothing wrote shows it at once (the tests; env
    /// MAMBA2_VK_POISON_BUFFERS=1). Memory is otherwise whatever its last user left, often zeros, which hides such reads.
    /// </summary>
    public bool PoisonNewBuffers { get; init; }

    /// <summary>How long to wait for one submission before declaring the device hung.</summary>
    public TimeSpan SubmitTimeout { get; init; } = TimeSpan.FromMinutes(10);

    public static VulkanOptions FromEnvironment(VulkanOptions? baseline = null)
    {
        var o = baseline ?? new VulkanOptions { PipelineCacheDirectory = DefaultPipelineCacheDirectory() };
        var validation = Environment.GetEnvironmentVariable("MAMBA2_VK_VALIDATION");
        if (validation is "1" or "true" or "on")
        {
            o = o with { Validation = true };
        }

        if (validation is "sync")
        {
            o = o with { Validation = true, SynchronizationValidation = true };
        }

        if (Environment.GetEnvironmentVariable("MAMBA2_VK_PIPELINE_STATS") is "1" or "true" or "on")
        {
            o = o with { PipelineStatistics = true };
        }

        if (Environment.GetEnvironmentVariable("MAMBA2_VK_POISON_BUFFERS") is "1" or "true" or "on")
        {
            o = o with { PoisonNewBuffers = true };
        }

        var device = Environment.GetEnvironmentVariable("MAMBA2_VK_DEVICE");
        if (!string.IsNullOrWhiteSpace(device) && o.Device is null)
        {
            o = o with { Device = device };
        }

        var cache = Environment.GetEnvironmentVariable("MAMBA2_VK_PIPELINE_CACHE");
        if (cache is "off" or "0")
        {
            o = o with { PipelineCacheDirectory = null };
        }
        else if (!string.IsNullOrWhiteSpace(cache))
        {
            o = o with { PipelineCacheDirectory = cache };
        }

        return o;
    }

    /// <summary>$XDG_CACHE_HOME/mamba2-vulkan, else ~/.cache/mamba2-vulkan.</summary>
    public static string DefaultPipelineCacheDirectory()
    {
        var root = Environment.GetEnvironmentVariable("XDG_CACHE_HOME");
        if (string.IsNullOrEmpty(root))
        {
            root = Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile), ".cache");
        }

        return Path.Combine(root, "mamba2-vulkan");
    }
}
