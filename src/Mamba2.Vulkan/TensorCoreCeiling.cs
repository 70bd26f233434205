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

    /// <summary>
    /// TFLOP/s of subgroup-scope multiply-adds with <paramref name="operandType"/> ("f16" or "bf16") operands, the
    /// median of <paramref name="repeats"/> runs, or null when the build or the device has no such kernel or shape.
    /// </summary>
    public static double? Measure(GpuDevice device, string operandType, int repeats = 5)
    {
        ArgumentNullException.ThrowIfNull(device);
        ArgumentOutOfRangeException.ThrowIfLessThan(repeats, 1);
        var source = operandType switch
        {
            "f16" => F16,
            "bf16" => Bf16,
            _ => throw new ArgumentException($"operand type '{operandType}': expected f16 or bf16.", nameof(operandType)),
        };
        var caps = device.Capabilities;
        var shape = caps.CooperativeMatrixShapes
            .Where(s => s.AType == operandType && s.BType == operandType && s.CType == "f32" && s.ResultType == "f32")
            .OrderByDescending(s => s.M * s.N * s.K).FirstOrDefault();
        if (shape is null || source.WhyNotRunnable(caps) is not null)
        {
            return null;
        }

        var cpu = device.Info.IsCpu;
        var subgroupsPerGroup = Math.Max(1u, Math.Min(4u, caps.MaxWorkgroupInvocations / caps.SubgroupSize));
        var groups = cpu ? 2u : Math.Min(4096u, caps.MaxWorkgroupCount.X);   // a CPU emulates each product in software
        var iterations = cpu ? 4u : 2048u;
        var subgroups = (long)groups * subgroupsPerGroup;
        var kernel = device.GetKernel(source, [subgroupsPerGroup * caps.SubgroupSize, shape.M, shape.N, shape.K]);
        using var outv = device.CreateBuffer<float>(subgroups * shape.M * shape.N, "ceiling_coopmat_out");
        var ms = GpuTiming.Measure(device, s => s.Dispatch(kernel, (groups, 1, 1), new Push(iterations, Value), outv), 1, repeats).MedianMs;
        var expected = Expected(iterations, shape.K);
        var sums = outv.Download();
        foreach (var i in new long[] { 0, shape.M * shape.N - 1, sums.Length - 1 })
        {
            if (sums[i] != expected)
            {
                throw new InvalidOperationException($"coopmat_peak ({operandType}): element {i} is {sums[i]}, expected {expected}: the ceiling would be meaningless.");
            }
        }

        return 2.0 * shape.M * shape.N * shape.K * Chains * iterations * subgroups / ms / 1e9;
    }

    /// <summary>Each element of the sum of the chains: chain k starts at k and gains K value^2 per iteration.</summary>
    internal static float Expected(uint iterations, uint k) =>
        Enumerable.Range(0, Chains).Sum(c => c + (float)(iterations * k * (double)Value * Value));

    private readonly record struct Push(uint Iterations, float Value);
}
