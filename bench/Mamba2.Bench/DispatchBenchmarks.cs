using BenchmarkDotNet.Attributes;
using Mamba2.Model.Ops;
using Mamba2.Model.Tensors;
using Mamba2.Vulkan;

namespace Mamba2.Bench;

/// <summary>Cost of recording and submitting small dispatches: the per-op overhead a training step pays.</summary>
[MemoryDiagnoser]
public class DispatchBenchmarks
{
    private GpuDevice _device = null!;
    private Tensor _a = null!;
    private Tensor _b = null!;

    [Params(1, 100)]
    public int Dispatches { get; set; }

    [GlobalSetup]
    public void Setup()
    {
        _device = GpuDevice.Create();
        _a = Tensor.FromArray(_device, "a", new float[256], 256);
        _b = Tensor.FromArray(_device, "b", new float[256], 256);
    }

    [Benchmark]
    public void RecordAndSubmit()
    {
        using var s = _device.BeginStream();
        for (var i = 0; i < Dispatches; i++)
        {
            Elementwise.Add(_a, _b, _b, s);
        }

        s.Submit();
    }

    [GlobalCleanup]
    public void Cleanup() => _device.Dispose();
}
