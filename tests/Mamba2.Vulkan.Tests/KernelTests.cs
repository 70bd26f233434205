using Mamba2.Tests;
using Xunit;

namespace Mamba2.Vulkan.Tests;

public class KernelTests(GpuFixture gpu)
{
    [Fact]
    public void PipelinesAreCachedPerSpecialization()
    {
        Assert.Same(Kernels.Get(gpu.Device, 64), Kernels.Get(gpu.Device, 64));
        Assert.NotSame(Kernels.Get(gpu.Device, 64), Kernels.Get(gpu.Device, 32));
    }

    [Fact]
    public void PipelineBuildsAreCountedOncePerSpecialization()
    {
        const uint local = 37;   // a specialization no other test builds
        var before = gpu.Device.PipelineBuilds;
        Kernels.Get(gpu.Device, local);
        var after = gpu.Device.PipelineBuilds;
        Kernels.Get(gpu.Device, local);
        Assert.Equal(before.Count + 1, after.Count);
        Assert.True(after.Time > before.Time);
        Assert.Equal(after, gpu.Device.PipelineBuilds);   // the second use built nothing
    }

    /// <summary>
    /// Ops look their pipeline up on every dispatch and a training step records thousands of dispatches: a lookup of a
    /// built pipeline, and the recording of a dispatch once a stream has warmed up, allocate nothing (their garbage
    /// made the host pause for .NET collections between a step's submissions).
    /// </summary>
    [Fact]
    public void LookupsAndDispatchesAllocateNothingOnceWarm()
    {
        // The fewest bytes of three runs: the first runs of a loop may allocate for the JIT (tiering, on-stack
        // replacement), never the steady state.
        static long Fewest(Action run)
        {
            var fewest = long.MaxValue;
            for (var attempt = 0; attempt < 3; attempt++)
            {
                var before = GC.GetAllocatedBytesForCurrentThread();
                run();
                fewest = Math.Min(fewest, GC.GetAllocatedBytesForCurrentThread() - before);
            }

            return fewest;
        }

        var k = Kernels.Get(gpu.Device, 64);
        Assert.Equal(0, Fewest(() =>
        {
            for (var i = 0; i < 100; i++)
            {
                Kernels.Get(gpu.Device, 64);
            }
        }));

        using var x = gpu.Device.CreateBuffer<float>(256, "x");
        using var y = gpu.Device.CreateBuffer<float>(256, "y");
        using var s = gpu.Device.BeginStream();
        Kernels.ScaleAddDispatch(s, k, x, y, 2f, 1f);
        Kernels.ScaleAddDispatch(s, k, y, x, 2f, 1f);   // reads what the first wrote: a barrier, whose lists are then reused
        Assert.Equal(0, Fewest(() =>
        {
            for (var i = 0; i < 10; i++)
            {
                Kernels.ScaleAddDispatch(s, k, x, y, 2f, 1f);
                Kernels.ScaleAddDispatch(s, k, y, x, 2f, 1f);
            }
        }));
        Assert.Equal(61, s.BarrierCount);
        Assert.Same(k, Kernels.Get(gpu.Device, 64));
    }

    [Fact]
    public void PipelineStatisticsAreCapturedOnlyWhenAsked()
    {
        using (var off = GpuDevice.Create(GpuFixture.Options with { PipelineStatistics = false, PipelineCacheDirectory = null }))
        {
            Kernels.Get(off, 64);
            Assert.False(off.CapturesPipelineStatistics);
            Assert.Empty(off.KernelStatistics);
        }

        using var d = GpuDevice.Create(GpuFixture.Options with { PipelineStatistics = true, PipelineCacheDirectory = null });
        var offered = d.Info.Extensions.Contains("VK_KHR_pipeline_executable_properties");
        Assert.Equal(offered, d.CapturesPipelineStatistics);
        Kernels.Get(d, 64);
        Kernels.Get(d, 64);
        if (offered)
        {
            var k = Assert.Single(d.KernelStatistics);
            Assert.Equal(Kernels.ScaleAdd.Name, k.Kernel);
            Assert.Equal([64u], k.Specialization);
            Assert.NotEmpty(k.Statistics);
            Assert.All(k.Statistics, s => Assert.False(string.IsNullOrWhiteSpace(s.Name)));
        }
        else
        {
            Assert.Empty(d.KernelStatistics);
        }
    }

    [Fact]
    public void InterfaceMismatchesAreReported()
    {
        var asm = typeof(Kernels).Assembly;
        var wrongBindings = new KernelSource(asm, "shaders/test/scale_add.spv", [BufferAccess.Read], 12);
        Assert.Contains("declares 1 bindings", Assert.Throws<InvalidOperationException>(() => gpu.Device.GetKernel(wrongBindings, [64])).Message);
        var noPush = new KernelSource(asm, "shaders/test/scale_add.spv", [BufferAccess.Read, BufferAccess.Write], 0);
        Assert.Throws<InvalidOperationException>(() => gpu.Device.GetKernel(noPush, [64]));
        Assert.Throws<ArgumentException>(() => gpu.Device.GetKernel(Kernels.ScaleAdd, [64, 1]));
        var wrongAccess = new KernelSource(asm, "shaders/test/scale_add.spv", [BufferAccess.Read, BufferAccess.ReadWrite], 12);
        Assert.Contains("binding 1 is Write in the shader but declared ReadWrite",
            Assert.Throws<InvalidOperationException>(() => gpu.Device.GetKernel(wrongAccess, [64])).Message);
        var wrongPush = new KernelSource(asm, "shaders/test/scale_add.spv", [BufferAccess.Read, BufferAccess.Write], 16);
        Assert.Contains("take 12 bytes", Assert.Throws<InvalidOperationException>(() => gpu.Device.GetKernel(wrongPush, [64])).Message);
        var missing = new KernelSource(asm, "shaders/test/nope.spv", [BufferAccess.Read], 0);
        Assert.Contains("not embedded", Assert.Throws<InvalidOperationException>(() => gpu.Device.GetKernel(missing)).Message);
    }

    [Fact]
    public void TheInterfaceIsReadFromTheSpirv()
    {
        // scale_add.comp: readonly x, writeonly y, push { uint n; float alpha; float beta; }, local size as constant 0.
        var layout = Kernels.ScaleAdd.Layout;
        Assert.Equal([BufferAccess.Read, BufferAccess.Write], layout.Bindings);
        Assert.Equal(12, layout.PushConstantBytes);
        Assert.Contains(0u, layout.SpecializationIds);
        Assert.Equal(layout.Bindings, Kernels.ScaleAdd.Bindings);
    }

    [Fact]
    public void PipelineCacheIsWrittenPerDeviceAndReused()
    {
        var dir = Directory.CreateTempSubdirectory("mamba2-cache-").FullName;
        try
        {
            var options = GpuFixture.Options with { PipelineCacheDirectory = dir };
            using (var d = GpuDevice.Create(options))
            {
                Kernels.Get(d);
                FailOnValidationMessagesAttribute.ThrowIfAny(d.ValidationLog, "first device");
            }

            var file = Assert.Single(Directory.GetFiles(dir));
            Assert.Contains("pipelines-", file);
            var abandoned = $"{file}.{int.MaxValue}.tmp";   // a save killed midway, by a process no longer running
            var running = $"{file}.1.tmp";                   // process 1 always runs: perhaps still saving
            File.WriteAllBytes(abandoned, [1, 2, 3]);
            File.WriteAllBytes(running, [1, 2, 3]);
            Assert.True(new FileInfo(file).Length > 0);
            using (var d = GpuDevice.Create(options))
            {
                Kernels.Get(d);
                d.Dispose();
                FailOnValidationMessagesAttribute.ThrowIfAny(d.ValidationLog, "second device");
            }

            Assert.False(File.Exists(abandoned));
            Assert.True(File.Exists(running));
        }
        finally
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
