using BenchmarkDotNet.Attributes;
using Mamba2.Model.Ops;
using Mamba2.Model.Tensors;
using Mamba2.Vulkan;

namespace Mamba2.Bench;

/// <summary>Opening a device and building the GEMM pipeline, with a cold and a warm on-disk pipeline cache.</summary>
public class PipelineBenchmarks
{
    private string _cacheDir = "";

    [GlobalSetup]
    public void Setup()
    {
        _cacheDir = Directory.CreateTempSubdirectory("mamba2-bench-cache-").FullName;
        OpenAndBuild(_cacheDir);
    }

    [Benchmark(Baseline = true)]
    public void WithoutCache() => OpenAndBuild(null);

    [Benchmark]
    public void WithWarmCache() => OpenAndBuild(_cacheDir);

    [GlobalCleanup]
    public void Cleanup() => Directory.Delete(_cacheDir, recursive: true);

    private static void OpenAndBuild(string? cacheDir)
    {
        using var device = GpuDevice.Create(new VulkanOptions { PipelineCacheDirectory = cacheDir });
        using var a = Tensor.Empty(device, "a", 8, 8);
        using var c = Tensor.Empty(device, "c", 8, 8);
        Gemm.Run(a, a, c);
    }
}
