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
