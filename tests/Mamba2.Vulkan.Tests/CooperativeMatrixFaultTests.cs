using Silk.NET.Vulkan;
using Xunit;

namespace Mamba2.Vulkan.Tests;

/// <summary>
/// A driver that lists cooperative matrices it cannot run in its configuration offers no tensor-core features, and a
/// tensor-core kernel says why, instead of the process crashing in the driver (lavapipe at subgroups of 16).
/// </summary>
public class CooperativeMatrixFaultTests
{
    private static readonly CooperativeMatrixShape[] Lavapipe = [new(8, 8, 8, "f16", "f16", "f16", "f16"), new(8, 8, 8, "f16", "f16", "f32", "f32")];

    [Fact]
    public void LavapipesMatricesRunOnlyInSubgroupsOfTheirRows()
    {
        Assert.Null(CooperativeMatrixFault.Of(DriverId.MesaLlvmpipe, 8, Lavapipe));
        Assert.Null(CooperativeMatrixFault.Of(DriverId.MesaLlvmpipe, 8, []));
        var at16 = CooperativeMatrixFault.Of(DriverId.MesaLlvmpipe, 16, Lavapipe);
        Assert.NotNull(at16);
        Assert.Contains("8x8 matrices", at16);
        Assert.Contains("LP_NATIVE_VECTOR_WIDTH=256", at16);
        Assert.Contains("subgroups of 16", at16);
        Assert.NotNull(CooperativeMatrixFault.Of(DriverId.MesaLlvmpipe, 4, Lavapipe));
        // Other drivers' shapes have no such tie to the subgroup size.
        Assert.Null(CooperativeMatrixFault.Of(DriverId.NvidiaProprietary, 32, [new(16, 16, 16, "f16", "f16", "f32", "f32")]));
        Assert.Null(CooperativeMatrixFault.Of(DriverId.MesaRadv, 64, [new(16, 16, 16, "f16", "f16", "f32", "f32")]));
    }

    [Fact]
    public void AFaultyListingOffersNoTensorCoreKernelsAndSaysWhy()
    {
        var coopmat = FakeCapabilities.Gpu with
        {
            SubgroupSize = 16,
            MinSubgroupSize = 16,
            MaxSubgroupSize = 16,
            CooperativeMatrixKhr = true,
            VulkanMemoryModel = true,
            Maintenance4 = true,
            CooperativeMatrixShapes = Lavapipe,
        };
        Assert.True(coopmat.Supports(ShaderFeatures.KhrCooperativeMatrix));
        var faulty = coopmat with { CooperativeMatrixUnusable = CooperativeMatrixFault.Of(DriverId.MesaLlvmpipe, 16, Lavapipe) };
        Assert.Equal(ShaderFeatures.None, faulty.ShaderFeatures & ShaderFeatures.KhrCooperativeMatrix);
        var kernel = new KernelSource(typeof(CooperativeMatrixFaultTests).Assembly, "shaders/test/subgroup_layout.spv", ShaderFeatures.KhrCooperativeMatrix);
        Assert.Null(kernel.WhyNotRunnable(coopmat));
        var why = kernel.WhyNotRunnable(faulty);
        Assert.NotNull(why);
        Assert.Contains("which the device lists but cannot run: lavapipe runs its 8x8 matrices one row a lane", why);
    }
}
