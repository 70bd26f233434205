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

    [Theory]
    [InlineData("f16", ShaderFeatures.KhrCooperativeMatrix)]
    [InlineData("bf16", ShaderFeatures.KhrCooperativeMatrix | ShaderFeatures.Bfloat16)]
    public void SharedFedCeilingChecksItsSumsAndRefusesBlocksThatDoNotFit(string operands, ShaderFeatures needs)
    {
        // MeasureShared checks the accumulators' sum against the host's and throws when it differs.
        var caps = gpu.Device.Capabilities;
        var runs = caps.Supports(needs) && ShaderBuild.Of(typeof(TensorCoreCeiling).Assembly).Features.HasFlag(needs)
            && TensorCoreCeiling.Shape(caps, operands) is not null;
        var block = new SharedFedBlock(2, 2, 2, 2);
        var tflops = TensorCoreCeiling.MeasureShared(gpu.Device, operands, block, repeats: 1);
        Assert.Equal(runs, tflops is not null);
        Assert.True(tflops is null || (tflops > 0 && double.IsFinite(tflops.Value)), $"{operands}: {tflops} TFLOP/s");
        var huge = new SharedFedBlock(8, 8, 4, 4);   // tiles far beyond any device's shared memory
        Assert.True(runs == false || huge.SharedBytes(TensorCoreCeiling.Shape(caps, operands)!) > caps.MaxSharedMemoryBytes);
        Assert.Null(TensorCoreCeiling.MeasureShared(gpu.Device, operands, huge, repeats: 1));
        Assert.Throws<ArgumentException>(() => TensorCoreCeiling.MeasureShared(gpu.Device, "f8", block));
    }

    [Fact]
    public void SharedMemoryOccupancyTimesEachSizeAndChecksItsChains()
    {
        // Measure checks where each size's invocations end against the host's walk of the chain and throws when
        // one differs.
        var max = gpu.Device.Capabilities.MaxSharedMemoryBytes;
        var points = SharedMemoryOccupancy.Measure(gpu.Device, [0, 4096, max], repeats: 1);
        Assert.Equal([0u, 4096u, max], points.Select(p => p.Bytes));
        Assert.All(points, p => Assert.True(p.Ms > 0 && double.IsFinite(p.Ms) && p.Relative > 0, $"{p}"));
        Assert.Equal(1.0, points[0].Relative);
        Assert.Throws<ArgumentOutOfRangeException>(() => SharedMemoryOccupancy.Measure(gpu.Device, [max + 4]));
        Assert.Throws<ArgumentOutOfRangeException>(() => SharedMemoryOccupancy.Measure(gpu.Device, []));

        // The chain is one cycle through every entry.
        var next = SharedMemoryOccupancy.Chain(64);
        var seen = new HashSet<uint>();
        for (uint i = 0, k = 0; k < 64; k++, i = next[i])
        {
            Assert.True(seen.Add(i), $"entry {i} twice");
        }
    }

    [Fact]
    public void SharedFedBlockCountsItsTilesInSixteenBitOperands()
    {
        var shape = new CooperativeMatrixShape(16, 16, 16, "f16", "f16", "f32", "f32");
        // A: 2 x 4 x 16 rows of 32 + 8; B: 32 rows of 4 x 4 x 16 + 8; two buffers of 2-byte operands.
        Assert.Equal(2u * (128 * 40 + 32 * 264) * 2, new SharedFedBlock(4, 4, 2, 4).SharedBytes(shape));
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
