using Silk.NET.Vulkan;

namespace Mamba2.Vulkan;

/// <summary>Builds each (kernel, specialization) pipeline once, through a VkPipelineCache persisted per device and driver.</summary>
internal sealed unsafe class KernelCache : IDisposable
{
    private readonly GpuDevice _device;
    // Per source interface (KernelSource.CacheKey), the pipelines built for each specialization: looked up on every
    // dispatch, so without allocating (a key string per lookup was most of a training step's host allocations).
    private readonly Dictionary<string, List<Kernel>> _kernels = [];
    private readonly List<KernelStatistics> _statistics = [];
    private readonly string? _cacheFile;
    private readonly PipelineCache _cache;

    public KernelCache(GpuDevice device, string? cacheDirectory)
    {
        _device = device;
        var info = device.Info;
        if (cacheDirectory is not null)
        {
            _cacheFile = Path.Combine(cacheDirectory, $"pipelines-{info.VendorId:x4}-{info.DeviceId:x4}-{info.PipelineCacheUuid}.bin");
        }

        // The driver checks the header (vendor, device, cache UUID) and ignores data it cannot use.
        var initial = TryRead(_cacheFile);
        fixed (byte* data = initial)
        {
            var create = new PipelineCacheCreateInfo
            {
                SType = StructureType.PipelineCacheCreateInfo,
                InitialDataSize = (nuint)initial.Length,
                PInitialData = initial.Length > 0 ? data : null,
            };
            device.Guard(device.Api.CreatePipelineCache(device.Handle, in create, null, out _cache), "vkCreatePipelineCache");
        }
    }

    /// <summary>Pipelines built so far and the host time it took (the driver compiles each on first use).</summary>
    public PipelineBuilds Builds { get; private set; }

    public IReadOnlyList<KernelStatistics> Statistics
    {
        get
        {
            lock (_kernels)
            {
                return [.. _statistics];
            }
        }
    }

    public Kernel Get(KernelSource source, ReadOnlySpan<uint> specialization)
    {
        var key = source.CacheKey;
        lock (_kernels)
        {
            if (!_kernels.TryGetValue(key, out var built))
            {
                _kernels[key] = built = [];
            }

            var kernel = Find(built, specialization);
            if (kernel is null)
            {
                var started = System.Diagnostics.Stopwatch.GetTimestamp();
                kernel = new Kernel(_device, source, specialization.ToArray(), _cache);
                built.Add(kernel);
                Builds = new PipelineBuilds(Builds.Count + 1, Builds.Time + System.Diagnostics.Stopwatch.GetElapsedTime(started));
                if (_device.CapturesPipelineStatistics)
                {
                    // After the build's time: the queries are this option's cost, not the driver's compile.
                    _statistics.Add(new KernelStatistics(source.Name, kernel.Specialization, PipelineStatisticsReader.Read(_device, kernel.Pipeline)));
                }
            }

            return kernel;
        }
    }

    /// <summary>The kernel of <paramref name="built"/> with exactly these specialization constants, or null.</summary>
    private static Kernel? Find(List<Kernel> built, ReadOnlySpan<uint> specialization)
    {
        foreach (var k in built)
        {
            if (specialization.SequenceEqual(k.SpecializationSpan))
            {
                return k;
            }
        }

        return null;
    }

    public void Dispose()
    {
        foreach (var k in _kernels.Values.SelectMany(b => b))
        {
            k.Dispose();
        }

        _kernels.Clear();
        Save();
        _device.Api.DestroyPipelineCache(_device.Handle, _cache, null);
    }

    private void Save()
    {
        if (_cacheFile is null)
        {
            return;
        }

        try
        {
            nuint size = 0;
            _device.Api.GetPipelineCacheData(_device.Handle, _cache, ref size, null).Check("vkGetPipelineCacheData");
            var data = new byte[(int)size];
            fixed (byte* p = data)
            {
                _device.Api.GetPipelineCacheData(_device.Handle, _cache, ref size, p).Check("vkGetPipelineCacheData");
            }

            Directory.CreateDirectory(Path.GetDirectoryName(_cacheFile)!);
            RemoveAbandonedTemporaries(_cacheFile);
            var temp = $"{_cacheFile}.{Environment.ProcessId}.tmp";
            File.WriteAllBytes(temp, data.AsSpan(0, (int)size).ToArray());
            File.Move(temp, _cacheFile, overwrite: true);
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException or VulkanException)
        {
            // The cache only saves start-up time; an unwritable cache folder must not fail the program.
        }
    }

    /// <summary>
    /// A process killed while saving leaves its "FILE.PID.tmp" behind (as large as the cache): removed once no
    /// process of that id runs. A reused id keeps its file until a later save finds it gone.
    /// </summary>
    private static void RemoveAbandonedTemporaries(string cacheFile)
    {
        var name = Path.GetFileName(cacheFile);
        foreach (var temp in Directory.EnumerateFiles(Path.GetDirectoryName(cacheFile)!, $"{name}.*.tmp"))
        {
            var id = Path.GetFileName(temp)[(name.Length + 1)..^".tmp".Length];
            if (int.TryParse(id, out var pid) && pid != Environment.ProcessId && !IsRunning(pid))
            {
                File.Delete(temp);
            }
        }

        static bool IsRunning(int pid)
        {
            try
            {
                using var p = System.Diagnostics.Process.GetProcessById(pid);
                return !p.HasExited;
            }
            catch (Exception e) when (e is ArgumentException or InvalidOperationException)
            {
                return false;
            }
        }
    }

    private static byte[] TryRead(string? path)
    {
        try
        {
            return path is not null && File.Exists(path) ? File.ReadAllBytes(path) : [];
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            return [];
        }
    }
}

/// <summary>
/// How many compute pipelines a device has built and the host time they took. The driver compiles a kernel's
/// SPIR-V for each specialization on first use: seconds for the largest (the SSD backward's dB/dC kernel about 30 s
/// on an H200), which the persisted pipeline cache (<see cref="VulkanOptions.PipelineCacheDirectory"/>) saves later
/// runs.
/// </summary>
public readonly record struct PipelineBuilds(int Count, TimeSpan Time);
