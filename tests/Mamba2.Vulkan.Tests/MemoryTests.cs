using Mamba2.Tests;
using Xunit;

namespace Mamba2.Vulkan.Tests;

public class MemoryTests(GpuFixture gpu)
{
    private GpuDevice Device => gpu.Device;

    [Theory]
    [InlineData(1)]
    [InlineData(7)]
    [InlineData(4099)]
    [InlineData(9_000_001)]
    public void UploadDownloadRoundTrips(int n)
    {
        var rng = new Random(TestMath.NewSeed());
        var data = TestMath.RandomArray(rng, n);
        using var b = Device.CreateBuffer<float>(data);
        Assert.Equal(data, b.Download());
    }

    [Fact]
    public void DeviceOnlyMemoryGoesThroughStagingInPieces()
    {
        // Host-memory buffers always map; device-kind buffers map only on unified memory. Either way the bytes
        // must arrive, including transfers larger than one staging piece (32 MiB).
        var rng = new Random(TestMath.NewSeed());
        var data = TestMath.RandomArray(rng, (40 << 20) / 4 + 3);
        using var b = Device.CreateBuffer<float>(data.Length, "big");
        b.Upload(data);
        Assert.Equal(data, b.Download());
    }

    [Theory]
    [InlineData(MemoryKind.Device)]
    [InlineData(MemoryKind.Upload)]
    public void TransfersLargerThanOneHostPieceArriveWhole(MemoryKind kind)
    {
        // A byte span cannot pass 2 GiB, so a 3.3 GB tensor (the LM head's input at 16384 x 50280) moves in pieces;
        // the pieces are shrunk here to 12 bytes so a small transfer takes that path, at an offset.
        var rng = new Random(TestMath.NewSeed());
        var data = TestMath.RandomArray(rng, 1001);
        using var b = Device.CreateBuffer(4 * 1004, "pieces", kind);
        var saved = GpuBuffer.PieceBytes;
        try
        {
            GpuBuffer.PieceBytes = 12;
            b.Upload<float>(data, 8);
            var back = new float[1001];
            b.Download<float>(back, 8);
            Assert.Equal(data, back);
            Assert.Throws<ArgumentOutOfRangeException>(() => b.Upload<float>(data, 16));
        }
        finally
        {
            GpuBuffer.PieceBytes = saved;
        }
    }

    [Fact]
    public void PartialUploadAndDownloadAtOffsets()
    {
        using var b = Device.CreateBuffer<float>(100);
        using (var s = Device.BeginStream())
        {
            s.Fill(b, 0f);
            s.Submit();
        }

        b.Upload<float>([1, 2, 3], offsetBytes: 40);
        var part = new float[5];
        b.Download<float>(part, offsetBytes: 36);
        Assert.Equal([0, 1, 2, 3, 0], part);
        Assert.Throws<ArgumentOutOfRangeException>(() => b.Upload<float>(new float[3], offsetBytes: 392));
    }

    [Fact]
    public void TracksLiveAndPeakBytesAndReusesFreedSpace()
    {
        var mem = Device.Memory;
        var before = mem.AllocatedBytes;
        mem.ResetPeak();
        var a = Device.CreateBuffer<float>(1 << 16);
        var b = Device.CreateBuffer<float>(1 << 16);
        var c = Device.CreateBuffer<float>(1 << 16);
        Assert.True(mem.AllocatedBytes >= before + 3 * (1 << 18));
        var reserved = mem.ReservedBytes;
        b.Dispose();
        var d = Device.CreateBuffer<float>(1 << 15);
        Assert.Equal(reserved, mem.ReservedBytes);
        var peak = mem.PeakAllocatedBytes;
        a.Dispose();
        c.Dispose();
        d.Dispose();
        Assert.Equal(before, mem.AllocatedBytes);
        Assert.Equal(peak, mem.PeakAllocatedBytes);
        Assert.True(peak >= before + 3 * (1 << 18));
    }

    /// <summary>
    /// Runs <paramref name="body"/> with the allocator's cache limit set to <paramref name="limit"/> and nothing cached
    /// at the start (on a GPU, earlier tests leave blocks in the cache), then restores the limit and empties the cache.
    /// </summary>
    private void WithCacheLimit(ulong limit, Action<MemoryAllocator> body)
    {
        var mem = Device.Memory;
        var before = mem.CacheLimitBytes;
        mem.ReleaseCached();
        mem.CacheLimitBytes = limit;
        try
        {
            body(mem);
        }
        finally
        {
            mem.CacheLimitBytes = before;
            mem.ReleaseCached();
        }
    }

    [Fact]
    public void LargeBuffersGetTheirOwnAllocationAndReturnIt() => WithCacheLimit(0, mem =>
    {
        var reserved = mem.ReservedBytes;
        using (var big = Device.CreateBuffer<float>(200 << 20 >> 2))
        {
            Assert.True(mem.ReservedBytes >= reserved + (200UL << 20));
        }

        Assert.Equal(reserved, mem.ReservedBytes);
    });

    /// <summary>16 buffers of 40 MiB (suballocated: shared blocks of 256 MiB take 6 each), then all of them freed.</summary>
    private void AllocateAndFreeAStagesScratch()
    {
        var scratch = Enumerable.Range(0, 16).Select(i => Device.CreateBuffer<float>(40 << 20 >> 2, $"scratch{i}")).ToList();
        scratch.ForEach(b => b.Dispose());
    }

    [Fact]
    public void EmptiedSharedBlocksAreCachedSoARepeatedStageStopsAllocating() => WithCacheLimit(1UL << 30, mem =>
    {
        // A stage's scratch spans several shared blocks and is all freed after it, as a layer-a-submission training
        // step frees each layer's: the blocks it emptied serve the next stage without the driver.
        var added = new List<long>();
        for (var stage = 0; stage < 3; stage++)
        {
            var before = mem.DriverAllocations;
            AllocateAndFreeAStagesScratch();
            added.Add(mem.DriverAllocations - before);
        }

        Assert.True(added[0] >= 2, $"the first stage should need new shared blocks; driver allocations per stage: {string.Join(", ", added)}");
        Assert.True(added.Skip(1).All(k => k == 0), $"driver allocations per stage: {string.Join(", ", added)}");
        Assert.True(mem.CachedBytes > 0);
    });

    [Fact]
    public void WithoutACacheOneEmptySharedBlockStaysAndTheRestGoBack() => WithCacheLimit(0, mem =>
    {
        var reserved = mem.ReservedBytes;
        AllocateAndFreeAStagesScratch();
        Assert.True(mem.ReservedBytes <= reserved + (256UL << 20), $"{mem.ReservedBytes - reserved} bytes still held");
        Assert.Equal(0UL, mem.CachedBytes);
    });

    [Fact]
    public void FreedLargeBuffersAreCachedForTheNextOfAboutTheirSizeUpToTheLimit() => WithCacheLimit(300UL << 20, mem =>
    {
        var reserved = mem.ReservedBytes;
        Device.CreateBuffer<float>(200 << 20 >> 2).Dispose();
        Assert.True(mem.ReservedBytes >= reserved + (200UL << 20));
        Assert.True(mem.CachedBytes >= 200UL << 20);
        var held = mem.ReservedBytes;

        // 150 MiB would waste a quarter of the cached block: a new one, which past the limit goes back when freed.
        using (var other = Device.CreateBuffer<float>(150 << 20 >> 2, "other"))
        {
            Assert.True(mem.ReservedBytes >= held + (150UL << 20));
        }

        Assert.Equal(held, mem.ReservedBytes);

        // 190 MiB fits the cached 200 MiB block: no new driver allocation.
        using (var again = Device.CreateBuffer<float>(190 << 20 >> 2, "again"))
        {
            Assert.Equal(held, mem.ReservedBytes);
            Assert.Equal(0UL, mem.CachedBytes);
        }

        Assert.True(mem.CachedBytes >= 200UL << 20);
        mem.ReleaseCached();
        Assert.Equal(0UL, mem.CachedBytes);
        Assert.Equal(reserved, mem.ReservedBytes);
    });

    [Fact]
    public void OverMaxAllocationIsATypedErrorNamingTheLimit()
    {
        var tooBig = Device.Capabilities.MaxAllocationBytes + 4096;
        var e = Assert.Throws<OutOfDeviceMemoryException>(() => Device.CreateBuffer(tooBig, "huge"));
        Assert.Contains("maxMemoryAllocationSize", e.Message);
        Assert.Contains("huge", e.Message);
    }

    [Fact]
    public void PastTheLimitIsTheTypedOutOfMemoryAndTakesNothing()
    {
        // A private device: the shared one's live bytes change as the tests beside this one run.
        using var device = GpuDevice.Create(GpuFixture.Options);
        var mem = device.Memory;
        using var first = device.CreateBuffer<float>(1000, "first");
        var live = mem.AllocatedBytes;
        mem.LimitBytes = live + 8192;
        using (device.CreateBuffer(4096, "fits"))
        {
            var e = Assert.Throws<OutOfDeviceMemoryException>(() => device.CreateBuffer(8192, "second"));
            Assert.Contains("second", e.Message, StringComparison.Ordinal);
            Assert.Contains("LimitBytes", e.Message, StringComparison.Ordinal);
            Assert.Equal(live + 4096, mem.AllocatedBytes);
        }

        mem.LimitBytes = null;
        using var later = device.CreateBuffer(8192, "second");
        Assert.Equal(live + 8192, mem.AllocatedBytes);
    }

    [Fact]
    public void BadSizesAreRejectedBeforeTheGpu()
    {
        Assert.Throws<ArgumentOutOfRangeException>(() => Device.CreateBuffer(0));
        Assert.Throws<ArgumentOutOfRangeException>(() => Device.CreateBuffer<float>(-1));
    }
}
