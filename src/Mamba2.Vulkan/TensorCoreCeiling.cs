namespace Mamba2.Vulkan;

/// <summary>
/// The device's own tensor-core ceiling: the rate of cooperative-matrix multiply-adds with fp32 accumulation when a
/// kernel does nothing else (<c>shaders/tc/coopmat_peak.comp</c>), on fragments of a shape the device lists for the
/// operand type. A tensor-core GEMM is judged against it as the fp32 kernels are against the FMA ceiling.
/// </summary>
public static class TensorCoreCeiling
{
    private const int Chains = 8;   // the kernel's CHAINS
    private const float Value = 0.0625f;   // A and B fill: products and sums stay exact in fp32

    private static readonly KernelSource F16 = new(typeof(TensorCoreCeiling).Assembly, "shaders/tc/coopmat_peak_f16.spv", ShaderFeatures.KhrCooperativeMatrix);

    private static readonly KernelSource Bf16 = new(typeof(TensorCoreCeiling).Assembly, "shaders/tc/coopmat_peak_bf16.spv",
        ShaderFeatures.KhrCooperativeMatrix | ShaderFeatures.Bfloat16);

    private static readonly KernelSource SharedF16 = new(typeof(TensorCoreCeiling).Assembly, "shaders/tc/coopmat_shared_peak_f16.spv",
        ShaderFeatures.KhrCooperativeMatrix);

    private static readonly KernelSource SharedBf16 = new(typeof(TensorCoreCeiling).Assembly, "shaders/tc/coopmat_shared_peak_bf16.spv",
        ShaderFeatures.KhrCooperativeMatrix | ShaderFeatures.Bfloat16);

    /// <summary>
    /// TFLOP/s of subgroup-scope multiply-adds with <paramref name="operandType"/> ("f16" or "bf16") operands, the
    /// median of <paramref name="repeats"/> runs, or null when the build or the device has no such kernel or shape.
    /// </summary>
    public static double? Measure(GpuDevice device, string operandType, int repeats = 5)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentOutOfRangeException.ThrowIfLessThan(repeats, 1);
        var caps = device.Capabilities;
        if (Runnable(caps, operandType, F16, Bf16) is not (var source, var shape))
        {
            return null;
        }

        var cpu = device.Info.IsCpu;
        var subgroupsPerGroup = Math.Max(1u, Math.Min(4u, caps.MaxWorkgroupInvocationsX / caps.SubgroupSize));
        var groups = cpu ? 2u : Math.Min(4096u, caps.MaxWorkgroupCount.X);   // a CPU emulates each product in software
        var iterations = cpu ? 4u : 2048u;
        var subgroups = (long)groups * subgroupsPerGroup;
        var kernel = device.GetKernel(source, [subgroupsPerGroup * caps.SubgroupSize, shape.M, shape.N, shape.K]);
        using var outv = device.CreateBuffer<float>(subgroups * shape.M * shape.N, "ceiling_coopmat_out");
        var ms = GpuTiming.Measure(device, s => s.Dispatch(kernel, (groups, 1, 1), new Push(iterations, Value), outv), 1, repeats).MedianMs;
        CheckSums(outv.Download(), shape, Expected(iterations, shape.K), $"coopmat_peak ({operandType})");

        return 2.0 * shape.M * shape.N * shape.K * Chains * iterations * subgroups / ms / 1e9;
    }

    /// <summary>
    /// TFLOP/s of the same multiply-adds fed from shared memory as a GEMM's inner loop feeds them
    /// (<c>shaders/tc/coopmat_shared_peak.comp</c>): per K slice a barrier, then each subgroup's fragment loads of
    /// <paramref name="block"/> and its products. Null when the build or device has no such kernel or shape, or the
    /// block's tiles do not fit the device.
    /// </summary>
    public static double? MeasureShared(GpuDevice device, string operandType, SharedFedBlock block, int repeats = 5)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentNullException.ThrowIfNull(block);
        ArgumentOutOfRangeException.ThrowIfLessThan(repeats, 1);
        var caps = device.Capabilities;
        if (Runnable(caps, operandType, SharedF16, SharedBf16) is not (var source, var shape))
        {
            return null;
        }

        var threads = block.SubgroupsM * block.SubgroupsN * caps.SubgroupSize;
        if (block.BK % shape.K != 0 || threads > caps.MaxWorkgroupInvocationsX || block.SharedBytes(shape) > caps.MaxSharedMemoryBytes)
        {
            return null;
        }

        var cpu = device.Info.IsCpu;
        var groups = cpu ? 2u : Math.Min(1024u, caps.MaxWorkgroupCount.X);
        var iterations = cpu ? 2u : 1024u;
        var subgroups = (long)groups * block.SubgroupsM * block.SubgroupsN;
        var kernel = device.GetKernel(source,
            [threads, shape.M, shape.N, shape.K, block.FragmentsM, block.FragmentsN, block.SubgroupsM, block.SubgroupsN, block.BK, block.Buffers]);
        using var outv = device.CreateBuffer<float>(subgroups * shape.M * shape.N, "ceiling_coopmat_shared_out");
        var ms = GpuTiming.Measure(device, s => s.Dispatch(kernel, (groups, 1, 1), new Push(iterations, Value), outv), 1, repeats).MedianMs;
        var expected = (float)(block.FragmentsM * block.FragmentsN * (double)iterations * block.BK * Value * Value);
        CheckSums(outv.Download(), shape, expected, $"coopmat_shared_peak ({operandType}, {block})");

        return 2.0 * shape.M * shape.N * shape.K * block.FragmentsM * block.FragmentsN * (block.BK / shape.K) * iterations * subgroups / ms / 1e9;
    }

    /// <summary>
    /// A ceiling kernel's stored sums must be what its products give (the first subgroup's first and last element,
    /// the last subgroup's last): a device that skipped work would not get them.
    /// </summary>
    private static void CheckSums(float[] sums, CooperativeMatrixShape shape, float expected, string kernel)
    {
        foreach (var i in new long[] { 0, shape.M * shape.N - 1, sums.Length - 1 })
        {
            if (sums[i] != expected)
            {
                throw new InvalidOperationException($"{kernel}: element {i} is {sums[i]}, expected {expected}: the ceiling would be meaningless.");
            }
        }
    }

    /// <summary>The kernel for <paramref name="operandType"/> and its shape, or null where the build or device lacks either.</summary>
    private static (KernelSource Source, CooperativeMatrixShape Shape)? Runnable(DeviceCapabilities caps, string operandType, KernelSource f16, KernelSource bf16)
    {
        var source = operandType switch
        {
            "f16" => f16,
            "bf16" => bf16,
            _ => throw new ArgumentException($"operand type '{operandType}': expected f16 or bf16.", nameof(operandType)),
        };
        return Shape(caps, operandType) is { } shape && source.WhyNotRunnable(caps) is null ? (source, shape) : null;
    }

    /// <summary>The listed shape with these operands and fp32 accumulation that the ceilings use: the largest.</summary>
    public static CooperativeMatrixShape? Shape(DeviceCapabilities caps, string operandType)
    {
        ArgumentNullException.ThrowIfNull(caps);
        return caps.CooperativeMatrixShapes
            .Where(s => s.AType == operandType && s.BType == operandType && s.CType == "f32" && s.ResultType == "f32")
            .OrderByDescending(s => s.M * s.N * s.K).FirstOrDefault();
    }

    /// <summary>Each element of the sum of the chains: chain k starts at k and gains K value^2 per iteration.</summary>
    internal static float Expected(uint iterations, uint k) =>
        Enumerable.Range(0, Chains).Sum(c => c + (float)(iterations * k * (double)Value * Value));

    private readonly record struct Push(uint Iterations, float Value);
}

/// <summary>
/// A workgroup of the shared-fed ceiling (<see cref="TensorCoreCeiling.MeasureShared"/>): a
/// <paramref name="SubgroupsM"/> x <paramref name="SubgroupsN"/> grid of subgroups, each owning
/// <paramref name="FragmentsM"/> x <paramref name="FragmentsN"/> accumulators, K in slices of <paramref name="BK"/>
/// alternating between <paramref name="Buffers"/> shared tiles.
/// </summary>
public sealed record SharedFedBlock(uint FragmentsM, uint FragmentsN, uint SubgroupsM, uint SubgroupsN, uint BK = 32, uint Buffers = 2)
{
    private const uint Pad = 8;   // the shader's PAD

    /// <summary>Shared memory of the kernel's tiles with fragments of <paramref name="shape"/> (16-bit operands).</summary>
    public uint SharedBytes(CooperativeMatrixShape shape)
    {
        ArgumentNullException.ThrowIfNull(shape);
        var a = SubgroupsM * FragmentsM * shape.M * (BK + Pad);
        var b = BK * (SubgroupsN * FragmentsN * shape.N + Pad);
        return Buffers * (a + b) * sizeof(ushort);
    }

    public override string ToString() => $"{SubgroupsM}x{SubgroupsN} subgroups of {FragmentsM}x{FragmentsN} fragments, BK {BK}, {Buffers} buffer{(Buffers == 1 ? "" : "s")}";
}
