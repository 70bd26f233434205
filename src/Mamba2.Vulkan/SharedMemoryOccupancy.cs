namespace Mamba2.Vulkan;

/// <summary>
/// How many workgroups a device keeps resident as each takes more shared memory, measured: the time of a
/// latency-bound kernel (<c>shaders/runtime/shared_occupancy.comp</c>, every invocation waiting on a chain of
/// dependent loads, 32 invocations a chain so that the loads' latency and not the cache's throughput bounds it) at each shared-memory size, against its time at the smallest. Where the relative throughput steps
/// down, fewer workgroups fit an SM (compute unit) at once. On the H200 the SSD's tensor-core kernels were bound by
/// shared memory well below the 48 KiB a workgroup may have (docs/PERF.md); this shows where the steps are.
/// </summary>
public static class SharedMemoryOccupancy
{
    private const uint Local = 256;

    /// <summary>Invocations that follow one chain (the shader's RUN).</summary>
    private const long ChainRun = 32;

    internal static readonly KernelSource Kernel = new(typeof(SharedMemoryOccupancy).Assembly, "shaders/runtime/shared_occupancy.spv");

    /// <summary>
    /// The kernel's median time with <paramref name="Bytes"/> of shared memory a workgroup, and its throughput
    /// relative to the first size measured (1 there; 0.5 where half as many workgroups are resident).
    /// </summary>
    public sealed record Point(uint Bytes, double Ms, double Relative);

    /// <summary>
    /// Each of <paramref name="bytes"/> (at most the device's shared memory a workgroup), in order: the median of
    /// <paramref name="repeats"/> timed runs after one warm-up. Throws when a run's invocations do not end where their
    /// chains do (the time would not be of the work).
    /// </summary>
    public static IReadOnlyList<Point> Measure(GpuDevice device, IReadOnlyList<uint> bytes, int repeats = 5)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(bytes);
        ArgumentOutOfRangeException.ThrowIfLessThan(repeats, 1);
        var caps = device.Capabilities;
        if (bytes.Count == 0 || bytes.Any(b => b > caps.MaxSharedMemoryBytes))
        {
            throw new ArgumentOutOfRangeException(nameof(bytes), $"expected one size or more, each at most {caps.MaxSharedMemoryBytes} bytes (this device's shared memory a workgroup)");
        }

        var cpu = device.Info.IsCpu;
        var local = Math.Min(Local, caps.MaxWorkgroupInvocationsX);
        var length = cpu ? 1u << 12 : 1u << 18;   // 1 MiB of links on a GPU: cache-resident, so each step waits the same
        var steps = cpu ? 16u : 256u;
        var groups = cpu ? 8u : Math.Min(16384u, caps.MaxWorkgroupCount.X);
        var next = Chain(length);
        using var chain = device.CreateBuffer<uint>(next, "occupancy_chain");
        using var outv = device.CreateBuffer<uint>((long)groups * local, "occupancy_out");
        var points = new List<Point>();
        foreach (var b in bytes)
        {
            var words = Math.Max(1u, b / 4);
            var kernel = device.GetKernel(Kernel, [local, words]);
            var push = new Push(steps, length - 1, Math.Max(1u, words / local));
            var ms = GpuTiming.Measure(device, s => s.Dispatch(kernel, (groups, 1, 1), push, chain, outv), 1, repeats).MedianMs;
            Check(outv.Download(), next, steps, local, b);
            points.Add(new Point(b, ms, points.Count == 0 ? 1.0 : points[0].Ms / ms));
        }

        return points;
    }

    /// <summary>One cycle through every entry, in a shuffled order: each link leads somewhere no cache line predicts.</summary>
    internal static uint[] Chain(uint length)
    {
        var order = Enumerable.Range(0, (int)length).Select(i => (uint)i).ToArray();
        new Random(1).Shuffle(order);
        var next = new uint[length];
        for (var k = 0; k < order.Length; k++)
        {
            next[order[k]] = order[(k + 1) % order.Length];
        }

        return next;
    }

    private static void Check(uint[] outv, uint[] next, uint steps, uint local, uint bytes)
    {
        foreach (var g in new long[] { 0, 1, local - 1, outv.Length - 1 })
        {
            var i = (uint)((g / ChainRun) & (next.Length - 1));
            for (var s = 0; s < steps; s++)
            {
                i = next[i];
            }

            if (outv[g] != i)
            {
                throw new InvalidOperationException($"shared_occupancy ({bytes} bytes): invocation {g} ended at {outv[g]}, its chain at {i}: the time would be meaningless.");
            }
        }
    }

    private readonly record struct Push(uint Steps, uint Mask, uint Spread);
}
