using Mamba2.Tests;
using Xunit;

namespace Mamba2.Vulkan.Tests;

public class CommandStreamTests(GpuFixture gpu)
{
    private GpuDevice Device => gpu.Device;

    [Fact]
    public void DependentDispatchesGetBarriersAndIndependentOnesDoNot()
    {
        var rng = new Random(TestMath.NewSeed());
        var x = TestMath.RandomArray(rng, 1001);
        using var bx = Device.CreateBuffer<float>(x);
        using var b1 = Device.CreateBuffer<float>(x.Length);
        using var b2 = Device.CreateBuffer<float>(x.Length);
        using var b3 = Device.CreateBuffer<float>(x.Length);
        var k = Kernels.Get(Device);
        using var s = Device.BeginStream();
        s.Fill(b1, float.NaN);
        s.Fill(b2, float.NaN);
        s.Fill(b3, float.NaN);
        Kernels.ScaleAddDispatch(s, k, bx, b1, 2f, 1f);   // b1 = 2x + 1   (after the fills: one barrier)
        Kernels.ScaleAddDispatch(s, k, bx, b3, -1f, 0f);  // independent of b1
        Assert.Equal(1, s.BarrierCount);
        Kernels.ScaleAddDispatch(s, k, b1, b2, 0.5f, -0.5f); // reads b1: barrier
        Kernels.ScaleAddDispatch(s, k, b2, b1, 3f, 0f);      // reads b2, rewrites b1: barrier
        Assert.Equal(3, s.BarrierCount);
        Assert.Equal(4, s.DispatchCount);
        s.Submit();
        var r1 = b1.Download();
        var r3 = b3.Download();
        for (var i = 0; i < x.Length; i++)
        {
            Assert.Equal(3f * (0.5f * (2f * x[i] + 1f) - 0.5f), r1[i], 1e-5f);
            Assert.Equal(-x[i], r3[i]);
        }
    }

    [Fact]
    public void SlicesOfOneBufferConflictOnlyWhereTheyOverlap()
    {
        // Halves of 1,024 floats (4 KiB offsets: aligned on any device) written and read by separate dispatches.
        const int half = 1024;
        var rng = new Random(TestMath.NewSeed());
        var x = TestMath.RandomArray(rng, 2 * half);
        using var bx = Device.CreateBuffer<float>(x);
        using var y = Device.CreateBuffer<float>(2 * half);
        using var z = Device.CreateBuffer<float>(2 * half);
        var k = Kernels.Get(Device);
        using var s = Device.BeginStream();
        BufferBinding Half(GpuBuffer<float> b, int i) => new(b, (ulong)(i * half * 4), half * 4);
        void Run(BufferBinding from, BufferBinding to, float alpha, float beta) =>
            s.Dispatch(k, (4, 1, 1), new Kernels.ScaleAddPush(half, alpha, beta), from, to);
        Run(Half(bx, 0), Half(y, 0), 2f, 1f);
        Run(Half(bx, 1), Half(y, 1), -1f, 0f);   // the other half of y: no conflict
        Assert.Equal(0, s.BarrierCount);
        Run(Half(y, 1), Half(z, 0), 3f, 0f);     // reads the half just written: barrier
        Assert.Equal(1, s.BarrierCount);
        Run(Half(bx, 0), Half(y, 0), 4f, 0f);    // rewrites y's first half; only its second was read since: none
        Assert.Equal(1, s.BarrierCount);
        Run(Half(y, 0), Half(z, 1), 1f, 1f);     // reads the rewritten half: barrier
        Assert.Equal(2, s.BarrierCount);
        s.Submit();
        var rz = z.Download();
        for (var i = 0; i < half; i++)
        {
            Assert.Equal(3f * -x[half + i], rz[i], 1e-5f);
            Assert.Equal(4f * x[i] + 1f, rz[half + i], 1e-5f);
        }
    }

    [Fact]
    public void AnExplicitBarrierOrdersEverythingAndSatisfiesLaterDependencies()
    {
        using var x = Device.CreateBuffer<float>([1, 2, 3, 4]);
        using var y = Device.CreateBuffer<float>(4);
        using var u = Device.CreateBuffer<float>(4);
        var k = Kernels.Get(Device);
        using var s = Device.BeginStream();
        Kernels.ScaleAddDispatch(s, k, x, y, 2f, 0f, groups: 1);
        s.Barrier();
        Assert.Equal(1, s.BarrierCount);
        Kernels.ScaleAddDispatch(s, k, y, u, 1f, 1f, groups: 1);   // depends on y, already ordered
        Assert.Equal(1, s.BarrierCount);
        s.Submit();
        Assert.Equal([3f, 5f, 7f, 9f], u.Download());
    }

    [Fact]
    public void LaunchedStreamsRunInOrderAndSeeWhatTheOnesBeforeWrote()
    {
        // A chain of streams, each launched without waiting for the one before, each reading what the one before
        // wrote and overwriting what it read: the order of launch is the order of their effects.
        var rng = new Random(TestMath.NewSeed());
        var x = TestMath.RandomArray(rng, 4097);
        using var a = Device.CreateBuffer<float>(x);
        using var b = Device.CreateBuffer<float>(x.Length);
        var k = Kernels.Get(Device);
        var streams = new List<CommandStream>();
        try
        {
            for (var i = 0; i < 6; i++)
            {
                var s = Device.BeginStream();
                streams.Add(s);
                var (from, to) = i % 2 == 0 ? (a, b) : (b, a);
                Kernels.ScaleAddDispatch(s, k, from, to, 2f, 1f);   // to = 2 from + 1
                s.Launch();
                Assert.True(s.IsLaunched);
            }

            var result = a.Download();   // mapped: the host waits for the launched streams using a; staged: queued after them
            for (var j = 0; j < x.Length; j++)
            {
                var expected = x[j];
                for (var i = 0; i < 6; i++)
                {
                    expected = 2f * expected + 1f;
                }

                Assert.Equal(expected, result[j], Math.Abs(expected) * 1e-6f);
            }

        }
        finally
        {
            streams.ForEach(s => s.Dispose());   // waits for any still launched
        }
    }

    [Fact]
    public void AMappedTransferWaitsOnlyForTheStreamsUsingItsBuffer()
    {
        // The host reads or writes host-visible memory while a launched stream that does not touch it runs on (a
        // training step's next batch, uploaded while its last stage runs); a stream that uses it is waited for first.
        var rng = new Random(TestMath.NewSeed());
        var x = TestMath.RandomArray(rng, 1031);
        using var a = Device.CreateBuffer<float>(x);
        using var b = Device.CreateBuffer<float>(x.Length, "b", MemoryKind.Readback);
        using var other = Device.CreateBuffer<float>(x.Length, "other", MemoryKind.Upload);
        var k = Kernels.Get(Device);
        using var s = Device.BeginStream();
        Kernels.ScaleAddDispatch(s, k, a, b, 3f, -1f);
        s.Launch();
        other.Upload(x);
        Assert.Equal(x, other.Download());
        Assert.False(s.Completed);   // neither transfer waited for s
        var result = b.Download();
        Assert.True(s.Completed);
        for (var j = 0; j < x.Length; j++)
        {
            Assert.Equal(3f * x[j] - 1f, result[j], Math.Abs(3f * x[j]) * 1e-6f + 1e-6f);
        }
    }

    [Fact]
    public void WaitNeedsALaunchAndDisposeWaitsForOne()
    {
        using var buffer = Device.CreateBuffer<float>(1 << 16);
        using (var s = Device.BeginStream())
        {
            Assert.Throws<InvalidOperationException>(() => s.Wait());
            s.Fill(buffer, 3f);
            s.Launch();
            Assert.Throws<InvalidOperationException>(() => s.Launch());
            s.Wait();
            Assert.False(s.IsLaunched);
            s.Launch();   // a replay
        }   // disposed while launched: waits before freeing

        Assert.All(buffer.Download(), v => Assert.Equal(3f, v));
    }

    [Fact]
    public void GridStrideCoversMoreElementsThanInvocations()
    {
        var x = Enumerable.Range(0, 100_000).Select(i => (float)i).ToArray();
        using var bx = Device.CreateBuffer<float>(x);
        using var by = Device.CreateBuffer<float>(x.Length);
        using var s = Device.BeginStream();
        s.Fill(by, float.NaN);
        Kernels.ScaleAddDispatch(s, Kernels.Get(Device, 32), bx, by, 1f, 0.5f, groups: 3);
        s.Submit();
        Assert.Equal(x.Select(v => v + 0.5f), by.Download());
    }

    [Fact]
    public void AnUploadTakesTheValuesWhenRecordedAndLaterStreamsSeeThem()
    {
        // The values are copied as the upload is recorded (the host may reuse its array at once); the host does not
        // wait for the launch; a stream launched after it reads them; replays copy the same values again.
        var rng = new Random(TestMath.NewSeed());
        var x = TestMath.RandomArray(rng, 4099);
        var host = (float[])x.Clone();
        using var a = Device.CreateBuffer<float>(x.Length + 3, "a");
        using var b = Device.CreateBuffer<float>(x.Length, "b");
        using var up = Device.BeginStream();
        up.Fill(a, float.NaN);
        up.Upload<float>(a, host, 3 * sizeof(float));
        Array.Fill(host, 7f);
        up.Launch();
        using (var s = Device.BeginStream())
        {
            s.Copy(a, 3 * sizeof(float), b, 0, b.SizeBytes);
            s.Launch();
            Assert.False(up.Completed);   // nothing waited for the upload
            s.Wait();
        }

        Assert.Equal(x, b.Download());
        var all = a.Download();
        Assert.All(all[..3], v => Assert.True(float.IsNaN(v)));
        Assert.Equal(x, all[3..]);

        up.Wait();
        a.Upload<float>(new float[a.Length]);
        up.Submit();   // a replay: the same values
        Assert.Equal(x, a.Download()[3..]);

        using var late = Device.BeginStream();
        Assert.Throws<ArgumentOutOfRangeException>(() => late.Upload<float>(a, x, 4 * sizeof(float)));   // past the end
        late.Upload<float>(a, ReadOnlySpan<float>.Empty);   // nothing to copy
        Assert.Equal(0, late.DispatchCount);
    }

    [Fact]
    public void CopyAndFillAndResubmit()
    {
        using var a = Device.CreateBuffer<float>([1, 2, 3, 4]);
        using var b = Device.CreateBuffer<float>(6);
        using var s = Device.BeginStream();
        s.Fill(b, 9f);
        s.Copy(a, 4, b, 8, 12);
        s.Submit();
        Assert.Equal([9, 9, 2, 3, 4, 9], b.Download());
        b.Upload<float>([0, 0, 0, 0, 0, 0]);
        s.Submit();
        Assert.Equal([9, 9, 2, 3, 4, 9], b.Download());
        Assert.Throws<InvalidOperationException>(() => s.Fill(b, 1f));
    }

    [Fact]
    public void TimestampsAreOrderedAndMeasureWork()
    {
        using var x = Device.CreateBuffer<float>(1 << 20);
        using var y = Device.CreateBuffer<float>(1 << 20);
        var k = Kernels.Get(Device);
        using var s = Device.BeginStream();
        s.Fill(x, 1f);
        s.Timestamp("start");
        Kernels.ScaleAddDispatch(s, k, x, y, 2f, 0f, groups: 64);
        s.Timestamp("end");
        var t = s.Submit();
        Assert.Equal(["start", "end"], t.Labels);
        Assert.True(t.Milliseconds("start", "end") > 0);
        Assert.Throws<KeyNotFoundException>(() => t.Milliseconds("start", "missing"));
    }

    /// <summary>A fresh timeline set on the device while <paramref name="run"/> runs.</summary>
    private StreamTimeline OnTimeline(Action run)
    {
        var timeline = new StreamTimeline();
        Device.Timeline = timeline;
        try
        {
            run();
        }
        finally
        {
            Device.Timeline = null;
        }

        return timeline;
    }

    [Fact]
    public void TimelineHoldsEachCompletedStreamInTheOrderTheyRan()
    {
        using var x = Device.CreateBuffer<float>(1 << 18);
        using var y = Device.CreateBuffer<float>(1 << 18);
        var k = Kernels.Get(Device);
        using (var before = Device.BeginStream("before"))
        {
            before.Fill(x, 1f);
            before.Submit();   // not on the timeline: none was set when it began
        }

        var timeline = OnTimeline(() =>
        {
            using var first = Device.BeginStream("first");
            Kernels.ScaleAddDispatch(first, k, x, y, 2f, 0f, groups: 64);
            first.Launch();
            using var second = Device.BeginStream("second");
            Kernels.ScaleAddDispatch(second, k, y, x, 2f, 0f, groups: 64);
            second.Launch();
            Assert.Empty(second.Wait().Labels);   // the span's timestamps are not the stream's own
            first.Wait();
        });

        var spans = timeline.Spans;
        Assert.Equal(["first", "second"], spans.Select(s => s.Label));
        Assert.All(spans, s => Assert.True(s.EndNs > s.BeginNs, $"{s.Label}: {s.BeginNs} .. {s.EndNs}"));
        Assert.True(spans[1].BeginNs >= spans[0].EndNs, "the second stream began before the first ended");
        Assert.Equal(spans.Sum(s => s.Milliseconds), timeline.BusyMs, 9);
        Assert.True(timeline.SpanMs >= timeline.BusyMs);
        var gap = Assert.Single(timeline.Gaps());
        Assert.Equal(("first", "second"), (gap.After, gap.Before));
        Assert.Equal((spans[1].BeginNs - spans[0].EndNs) / 1e6, gap.Milliseconds, 9);
        // The host's clock: each stream begun before it was launched, the second begun after the first was launched.
        Assert.All(spans, s => Assert.True(s.HostBeginMs >= 0 && s.RecordingMs >= 0, $"{s.Label}: host {s.HostBeginMs} .. {s.HostLaunchMs}"));
        Assert.True(spans[1].HostBeginMs >= spans[0].HostLaunchMs);
        var csv = timeline.ToCsv().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        Assert.Equal("label,device_begin_ms,device_end_ms,host_begin_ms,host_launch_ms", csv[0]);
        Assert.Equal(["first", "second"], csv.Skip(1).Select(line => line.Split(',')[0]));
        Assert.StartsWith("first,0.000,", csv[1], StringComparison.Ordinal);
        using var after = Device.BeginStream("after");
        after.Fill(x, 0f);
        after.Submit();
        Assert.Equal(2, timeline.Spans.Count);   // unset: nothing more recorded
    }

    [Fact]
    public void TimelineHoldsTheHostsWaitsAndWhatItWasRecordingMeanwhile()
    {
        using var x = Device.CreateBuffer<float>(1 << 18);
        using var y = Device.CreateBuffer<float>(1 << 18);
        var k = Kernels.Get(Device);
        var timeline = OnTimeline(() =>
        {
            using var first = Device.BeginStream("first");
            Kernels.ScaleAddDispatch(first, k, x, y, 2f, 0f, groups: 64);
            first.Launch();
            using var recording = Device.BeginStream("recording");
            Kernels.ScaleAddDispatch(recording, k, y, x, 2f, 0f, groups: 64);
            first.Wait();   // while "recording" is being recorded
            recording.Launch();
            recording.Wait();
            using var disposed = Device.BeginStream("disposed");
            disposed.Fill(x, 0f);
            disposed.Launch();   // disposing waits for it: a wait, though no span
        });

        var waits = timeline.Waits;
        Assert.Equal(["first", "recording", "disposed"], waits.Select(w => w.Label));
        Assert.All(waits, w => Assert.True(w.AtMs >= 0 && w.Milliseconds >= 0, $"{w.Label}: at {w.AtMs} for {w.Milliseconds}"));
        Assert.True(waits[1].AtMs >= waits[0].AtMs + waits[0].Milliseconds);
        Assert.Equal(["recording"], timeline.RecordingDuring(waits[0]));
        Assert.Empty(timeline.RecordingDuring(waits[1]));
        Assert.Equal(["first", "recording"], timeline.Spans.Select(s => s.Label));
    }

    [Fact]
    public void SectionsAreFreeUnlessProfilingAndSumByName()
    {
        using var x = Device.CreateBuffer<float>(1 << 16);
        using var y = Device.CreateBuffer<float>(1 << 16);
        var k = Kernels.Get(Device);
        using (var quiet = Device.BeginStream())
        {
            quiet.Section("work");
            Assert.Equal(0, quiet.BarrierCount);
            Assert.Empty(quiet.Submit().Labels);
        }

        using var s = Device.BeginStream();
        s.Profiling = true;
        s.Timestamp("start");
        foreach (var name in new[] { "a", "b", "a" })
        {
            Kernels.ScaleAddDispatch(s, k, x, y, 2f, 0f, groups: 16);
            s.Section(name);
        }

        var t = s.Submit();
        Assert.Equal(["start", "a", "b", "a"], t.Labels);
        var sections = t.Sections();
        Assert.Equal(["a", "b"], sections.Select(q => q.Name));
        Assert.Equal((t.Nanoseconds[3] - t.Nanoseconds[0]) / 1e6, sections.Sum(q => q.Milliseconds), 9);
        Assert.Equal((t.Nanoseconds[2] - t.Nanoseconds[1]) / 1e6, sections[1].Milliseconds, 12);
    }

    [Fact]
    public void CommandsAreTimedBySectionAndKernelOnlyWhenAsked()
    {
        using var x = Device.CreateBuffer<float>(1 << 14);
        using var y = Device.CreateBuffer<float>(1 << 14);
        var k = Kernels.Get(Device);
        using (var sectionsOnly = Device.BeginStream())
        {
            sectionsOnly.ProfilingCommands = true;   // without Profiling: nothing
            Kernels.ScaleAddDispatch(sectionsOnly, k, x, y, 2f, 0f);
            sectionsOnly.Section("a");
            Assert.Empty(sectionsOnly.Submit().Labels);
        }

        using var s = Device.BeginStream();
        s.Profiling = true;
        s.ProfilingCommands = true;
        s.Timestamp("start");
        Kernels.ScaleAddDispatch(s, k, x, y, 2f, 0f, groups: 16);
        Kernels.ScaleAddDispatch(s, k, x, y, 2f, 0f, groups: 16);
        s.Section("a");
        s.Fill(y, 0f);
        Kernels.ScaleAddDispatch(s, k, x, y, 2f, 0f, groups: 16);
        using (s.SectionScope("b"))
        {
            s.Copy(y, 0, x, 0, 4096);
            s.Section("c");
        }

        Kernels.ScaleAddDispatch(s, k, x, y, 2f, 0f, groups: 16);   // after the last mark
        var t = s.Submit();
        var kernel = GpuTimings.CommandMark + Kernels.ScaleAdd.Name;
        Assert.Equal(["start", kernel, kernel, "a", "#fill", kernel, "#copy", "b/c", "b", kernel], t.Labels);

        // Sections take their commands' intervals: the same totals as marks alone would give.
        var sections = t.Sections();
        Assert.Equal(["a", "b/c", "b"], sections.Select(q => q.Name));
        Assert.Equal((t.Nanoseconds[3] - t.Nanoseconds[0]) / 1e6, sections[0].Milliseconds, 9);
        Assert.Equal((t.Nanoseconds[7] - t.Nanoseconds[3]) / 1e6, sections[1].Milliseconds, 9);
        Assert.Equal(["a", "b"], t.Sections(depth: 1).Select(q => q.Name));

        var commands = t.Commands();
        Assert.Equal([("a", Kernels.ScaleAdd.Name, 2), ("b/c", "fill", 1), ("b/c", Kernels.ScaleAdd.Name, 1), ("b/c", "copy", 1), ("", Kernels.ScaleAdd.Name, 1)],
            commands.Select(c => (c.Section, c.Kernel, c.Calls)));
        Assert.Equal((t.Nanoseconds[2] - t.Nanoseconds[0]) / 1e6, commands[0].Milliseconds, 9);
        Assert.Equal((t.Nanoseconds[6] - t.Nanoseconds[5]) / 1e6, commands[3].Milliseconds, 9);
        Assert.All(commands, c => Assert.True(c.Milliseconds >= 0));
        Assert.Equal(["a", "b", ""], t.Commands(depth: 1).Select(c => c.Section).Distinct());
    }

    [Fact]
    public void SectionScopesNameTheirMarksAndAccountForTheirRemainder()
    {
        using var x = Device.CreateBuffer<float>(1 << 12);
        using var y = Device.CreateBuffer<float>(1 << 12);
        var k = Kernels.Get(Device);
        using var s = Device.BeginStream();
        s.Profiling = true;
        s.Section("start");
        using (s.SectionScope("ssd"))
        {
            Kernels.ScaleAddDispatch(s, k, x, y, 2f, 0f, groups: 4);
            s.Section("stage");
            using (s.SectionScope("rev"))
            {
                Kernels.ScaleAddDispatch(s, k, x, y, 2f, 0f, groups: 4);
                s.Section("stage");
            }

            Kernels.ScaleAddDispatch(s, k, x, y, 2f, 0f, groups: 4);
        }

        s.Section("norm");
        Assert.Throws<ArgumentException>(() => s.SectionScope("a/b"));
        var t = s.Submit();
        Assert.Equal(["start", "ssd/stage", "ssd/rev/stage", "ssd/rev", "ssd", "norm"], t.Labels);
        Assert.Equal(["ssd/stage", "ssd/rev/stage", "ssd/rev", "ssd", "norm"], t.Sections().Select(q => q.Name));
        var top = t.Sections(depth: 1);
        Assert.Equal(["ssd", "norm"], top.Select(q => q.Name));
        Assert.Equal((t.Nanoseconds[4] - t.Nanoseconds[0]) / 1e6, top[0].Milliseconds, 9);
        Assert.Equal(["ssd/stage", "ssd/rev", "ssd", "norm"], t.Sections(depth: 2).Select(q => q.Name));
    }

    [Fact]
    public void ScopesClosedOutOfOrderAreRejected()
    {
        using var s = Device.BeginStream();
        var outer = s.SectionScope("outer");
        using var inner = s.SectionScope("inner");
        Assert.Throws<InvalidOperationException>(outer.Dispose);
    }

    [Fact]
    public void MisuseIsRejectedBeforeRecording()
    {
        using var x = Device.CreateBuffer<float>(16);
        using var y = Device.CreateBuffer<float>(16);
        var k = Kernels.Get(Device);
        using var s = Device.BeginStream();
        var push = new Kernels.ScaleAddPush(16, 1, 0);
        var max = Device.Capabilities.MaxWorkgroupCount.X;
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => s.Dispatch(k, (max + 1, 1, 1), push, x, y));
        Assert.Contains("stride", e.Message);
        Assert.Throws<ArgumentException>(() => s.Dispatch(k, (1, 1, 1), push, x));
        Assert.Throws<ArgumentException>(() => s.Dispatch(k, (1, 1, 1), 1.0f, x, y));
        Assert.Throws<ArgumentException>(() => s.Dispatch(k, (1, 1, 1), x, y));
        Assert.Throws<ArgumentOutOfRangeException>(() => s.Dispatch(k, (1, 1, 1), push, new BufferBinding(x, 32, 64), y));
        Assert.Throws<ArgumentException>(() => s.Dispatch(k, (1, 1, 1), push, new BufferBinding(x, 4, 32), y));
        Assert.Equal(0, s.DispatchCount);
    }

    [Fact]
    public void OwnedScratchLivesThroughReplaysAndIsFreedWithTheStream()
    {
        var x = TestMath.RandomArray(new Random(TestMath.NewSeed()), 300);
        using var bx = Device.CreateBuffer<float>(x);
        using var output = Device.CreateBuffer<float>(x.Length);
        var k = Kernels.Get(Device);
        var before = Device.Memory.AllocatedBytes;
        GpuBuffer<float> scratch;
        using (var s = Device.BeginStream())
        {
            scratch = s.Own(Device.CreateBuffer<float>(x.Length));
            Kernels.ScaleAddDispatch(s, k, bx, scratch, 2f, 0f);
            Kernels.ScaleAddDispatch(s, k, scratch, output, 1f, 1f);
            s.Submit();
            s.Submit();   // a replay still finds the scratch alive
            Assert.False(scratch.IsDisposed);
            Assert.True(Device.Memory.AllocatedBytes > before);
        }

        Assert.True(scratch.IsDisposed);
        Assert.Equal(before, Device.Memory.AllocatedBytes);
        var r = output.Download();
        for (var i = 0; i < x.Length; i++)
        {
            Assert.Equal(2f * x[i] + 1f, r[i], 1e-6f);
        }
    }

    [Fact]
    public void FreeingABufferBeforeSubmitIsCaught()
    {
        var x = Device.CreateBuffer<float>(16);
        using var y = Device.CreateBuffer<float>(16);
        using var s = Device.BeginStream();
        Kernels.ScaleAddDispatch(s, Kernels.Get(Device), x, y, 1f, 0f, groups: 1);
        x.Dispose();
        Assert.Throws<ObjectDisposedException>(() => s.Submit());
        Assert.Throws<ObjectDisposedException>(() => x.Download());
    }
}
