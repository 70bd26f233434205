using Mamba2.Tests;
using Xunit;

namespace Mamba2.Vulkan.Tests;

public class DeviceCeilingsTests(GpuFixture gpu)
{
    [Fact]
    public void CeilingsArePositiveAndTheFmaKernelDidItsWork()
    {
        // Measure checks the FMA kernel's sums against the host's chains and throws when they differ.
        var c = DeviceCeilings.Measure(gpu.Device, repeats: 1);
        Assert.True(c.CopyGBps > 0 && double.IsFinite(c.CopyGBps), $"copy {c.CopyGBps} GB/s");
        Assert.True(c.Fp32Tflops > 0 && double.IsFinite(c.Fp32Tflops), $"fma {c.Fp32Tflops} TFLOP/s");
        Assert.True(c.CopyBytes >= 1 << 20);
        Assert.Equal(DeviceCeilings.Expected(1024 + 5), DeviceCeilings.Expected(5));   // the kernel's inputs repeat every 1024
    }

    [Theory]
    [InlineData("f16", ShaderFeatures.KhrCooperativeMatrix, "khr_coopmat")]
    [InlineData("bf16", ShaderFeatures.KhrCooperativeMatrix | ShaderFeatures.Bfloat16, "bf16")]
    public void TensorCoreCeilingIsMeasuredWhereTheDeviceHasTensorCores(string operands, ShaderFeatures needs, string probe)
    {
        // Measure checks every sum of the kernel's chains and throws when one differs.
        var tflops = TensorCoreCeiling.Measure(gpu.Device, operands, repeats: 1);
        var runs = gpu.Device.Capabilities.Supports(needs) && ShaderBuild.Of(typeof(TensorCoreCeiling).Assembly).Features.HasFlag(needs);
        var required = (Environment.GetEnvironmentVariable("MAMBA2_TEST_REQUIRE") ?? "").Split(',').Contains(probe);
        Assert.True(runs || !required, $"MAMBA2_TEST_REQUIRE names {probe}, which this build or device lacks");
        Assert.Equal(runs, tflops is not null);
        Assert.True(tflops is null || (tflops > 0 && double.IsFinite(tflops.Value)), $"{operands}: {tflops} TFLOP/s");
        Assert.Equal(28f + 8 * 3 * 16 / 256f, TensorCoreCeiling.Expected(3, 16));   // chains start at 0..7, each gains K v^2 a step
        Assert.Throws<ArgumentException>(() => TensorCoreCeiling.Measure(gpu.Device, "f8"));
    }

    [Fact]
    public void SpinUpRunsForAtLeastItsDurationAndFreesItsBuffer()
    {
        var before = gpu.Device.Memory.AllocatedBytes;
        var clock = System.Diagnostics.Stopwatch.StartNew();
        DeviceCeilings.SpinUp(gpu.Device, TimeSpan.FromMilliseconds(30));
        Assert.True(clock.ElapsedMilliseconds >= 30, $"returned after {clock.ElapsedMilliseconds} ms");
        Assert.Equal(before, gpu.Device.Memory.AllocatedBytes);
    }
}
