using BenchmarkDotNet.Attributes;
using Mamba2.Vulkan;

namespace Mamba2.Bench;

/// <summary>Upload and download throughput between host arrays and device buffers (staging or direct mapping).</summary>
public class TransferBenchmarks
{
    private GpuDevice _device = null!;
    private GpuBuffer<float> _buffer = null!;
    private float[] _host = [];

    [Params(1 << 18, 1 << 24)]
    public int Floats { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _device = GpuDevice.Create();
        _buffer = _device.CreateBuffer<float>(Floats);
        _host = new float[Floats];
    }

    [Benchmark]
    public void Upload() => _buffer.Upload(_host);

    [Benchmark]
    public void Download() => _buffer.Download<float>(_host);

    [GlobalCleanup]
    public void Cleanup() => _device.Dispose();
}
