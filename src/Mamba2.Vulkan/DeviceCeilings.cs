namespace Mamba2.Vulkan;

/// <summary>
/// What this device does at best, measured rather than taken from a data sheet: buffer-to-buffer copy bandwidth
/// (bytes read plus written), the fp32 FMA rate of a kernel that does nothing else, and the tensor-core rate with f16
/// and bf16 operands (<see cref="TensorCoreCeiling"/>; null where the device or the build has none). Benchmarks
/// report their figures as a share of these.
/// </summary>
public sealed record DeviceCeilings(double CopyGBps, double Fp32Tflops, long CopyBytes, long FmaInvocations,
    double? F16TensorTflops = null, double? Bf16TensorTflops = null)
{
    private const int FmaIterations = 4096;
    private const float FmaM = 0.999f;
    private const float FmaC = 1e-3f;

    internal static readonly KernelSource FmaPeak = new(typeof(DeviceCeilings).Assembly, "shaders/runtime/fma_peak.spv");

    internal static readonly KernelSource CopyPeak = new(typeof(DeviceCeilings).Assembly, "shaders/runtime/copy_peak.spv");

    /// <summary>
    /// Medians of <paramref name="repeats"/> timed runs after one warm-up: a copy of 256 MiB on a GPU (32 MiB on a
    /// CPU driver, or less where memory is small) and enough FMA invocations to fill the device.
    /// </summary>
    public static DeviceCeilings Measure(GpuDevice device, int repeats = 5)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentOutOfRangeException.ThrowIfLessThan(repeats, 1);
        SpinUp(device);
        var cpu = device.Info.IsCpu;
        var copyBytes = (long)Math.Min(cpu ? 32UL << 20 : 256UL << 20, Math.Max(1UL << 20, device.Info.DeviceLocalBytes / 16)) / 16 * 16;
        var local = Math.Min(256u, device.Capabilities.MaxWorkgroupInvocationsX);
        double copyMs;
        using (var src = device.CreateBuffer<float>(copyBytes / 4, "ceiling_copy_src"))
        using (var dst = device.CreateBuffer<float>(copyBytes / 4, "ceiling_copy_dst"))
        {
            // The better of the transfer command and a shader copy: on the H100 vkCmdCopyBuffer moved 847 GB/s,
            // a third of what kernels reach.
            var vectors = (uint)(copyBytes / 16);
            var copy = device.GetKernel(CopyPeak, [local]);
            var copyGroups = Math.Clamp((vectors + local - 1) / local, 1u, Math.Min(65535u, device.Capabilities.MaxWorkgroupCount.X));
            var transferMs = GpuTiming.Measure(device, s => s.Copy(src, 0, dst, 0, (ulong)copyBytes), 1, repeats, s => s.Fill(src, 1f)).MedianMs;
            var shaderMs = GpuTiming.Measure(device, s => s.Dispatch(copy, (copyGroups, 1, 1), new CopyPush(vectors), src, dst), 1, repeats,
                s => s.Fill(src, 2f)).MedianMs;
            if (dst.Download().Any(v => v != 2f))
            {
                throw new InvalidOperationException("copy_peak: the destination does not hold the source: the ceiling would be meaningless.");
            }

            copyMs = Math.Min(transferMs, shaderMs);
        }

        var groups = FmaGroups(device);
        var invocations = (long)groups * local;
        double fmaMs;
        using (var outv = device.CreateBuffer<float>(invocations, "ceiling_fma_out"))
        {
            var kernel = device.GetKernel(FmaPeak, [local]);
            fmaMs = GpuTiming.Measure(device, s => s.Dispatch(kernel, (groups, 1, 1), new FmaPush(FmaIterations, FmaM, FmaC), outv), 1, repeats).MedianMs;
            Check(outv.Download(), local);
        }

        var flops = 2.0 * 8 * FmaIterations * invocations;
        return new DeviceCeilings(2.0 * copyBytes / copyMs / 1e6, flops / fmaMs / 1e9, copyBytes, invocations,
            TensorCoreCeiling.Measure(device, "f16", repeats), TensorCoreCeiling.Measure(device, "bf16", repeats));
    }

    /// <summary>
    /// Keeps the device busy with FMA work for <paramref name="duration"/> of wall time (default: 1 s on a GPU,
    /// nothing on a CPU driver, whose clocks do not ramp), so that what is timed next runs at working clocks: an
    /// idle H100 sits at 345 MHz.
    /// </summary>
    public static void SpinUp(GpuDevice device, TimeSpan? duration = null)
    {
        ArgumentNullException.ThrowIfNull(device);
        var until = duration ?? TimeSpan.FromSeconds(device.Info.IsCpu ? 0 : 1);
        if (until <= TimeSpan.Zero)
        {
            return;
        }

        var local = Math.Min(256u, device.Capabilities.MaxWorkgroupInvocationsX);
        var groups = FmaGroups(device);
        using var outv = device.CreateBuffer<float>((long)groups * local, "spin_up");
        var kernel = device.GetKernel(FmaPeak, [local]);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (clock.Elapsed < until)
        {
            using var s = device.BeginStream();
            for (var i = 0; i < 8; i++)
            {
                s.Dispatch(kernel, (groups, 1, 1), new FmaPush(FmaIterations, FmaM, FmaC), outv);
                s.Barrier();
            }

            s.Submit();
        }
    }

    /// <summary>Workgroups of the FMA kernel: enough to fill a GPU, a few per core on a CPU driver.</summary>
    private static uint FmaGroups(GpuDevice device) => device.Info.IsCpu ? 64u : Math.Min(8192u, device.Capabilities.MaxWorkgroupCount.X);

    private readonly record struct FmaPush(uint Iterations, float M, float C);

    private readonly record struct CopyPush(uint Vectors);

    /// <summary>The kernel's sums must be what the chains give: a device that skipped the work would not get them.</summary>
    private static void Check(float[] sums, uint local)
    {
        foreach (var i in new long[] { 0, 1, local - 1, sums.Length - 1 })
        {
            var expected = Expected(i);
            if (!(Math.Abs(sums[i] - expected) <= 1e-3 * Math.Abs(expected)))
            {
                throw new InvalidOperationException($"fma_peak: invocation {i} gave {sums[i]}, expected {expected}: the ceiling would be meaningless.");
            }
        }
    }

    /// <summary>Invocation <paramref name="i"/>'s sum, as the kernel computes it (float32 fused multiply-adds).</summary>
    internal static float Expected(long i)
    {
        var total = 0f;
        for (var k = 0; k < 8; k++)
        {
            var a = (i % 1024) * 1e-3f + k;
            for (var it = 0; it < FmaIterations; it++)
            {
                a = MathF.FusedMultiplyAdd(a, FmaM, FmaC);
            }

            total += a;
        }

        return total;
    }
}
