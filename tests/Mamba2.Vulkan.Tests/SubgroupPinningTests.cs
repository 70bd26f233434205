using Mamba2.Tests;
using Xunit;

namespace Mamba2.Vulkan.Tests;

/// <summary>
/// SPIR-V 1.6 kernels (the tensor-core variants) let a driver pick each pipeline's subgroup size; the host sizes
/// workgroups in subgroups of <see cref="DeviceCapabilities.SubgroupSize"/>, so such pipelines require that size.
/// </summary>
public class SubgroupPinningTests(GpuFixture gpu)
{
    private static readonly KernelSource Layout = new(typeof(SubgroupPinningTests).Assembly, "shaders/test/subgroup_layout.spv");

    /// <summary>An AMD-like device: wave32 or wave64, 64 reported.</summary>
    private static readonly DeviceCapabilities TwoWidths = FakeCapabilities.Gpu with
    {
        SubgroupSize = 64,
        MinSubgroupSize = 32,
        MaxSubgroupSize = 64,
        SubgroupSizeControl = true,
        ComputeFullSubgroups = true,
        RequiredSubgroupSizeCompute = true,
        MaxComputeWorkgroupSubgroups = 16,
    };

    [Fact]
    public void TheVersionAndWorkgroupSizeAreReadFromTheSpirv()
    {
        var spv15 = Kernels.ScaleAdd.Layout;   // a Shader item: Vulkan 1.2, SPIR-V 1.5
        Assert.False(spv15.AllowsVaryingSubgroupSize);
        Assert.Equal(0u, spv15.LocalSize[0].SpecId);
        Assert.Equal((48u, 1u, 1u), spv15.WorkgroupSize([48]));

        var spv16 = Layout.Layout;             // a ShaderVariant: Vulkan 1.3, SPIR-V 1.6 (LocalSizeId)
        Assert.True(spv16.AllowsVaryingSubgroupSize);
        Assert.Equal(0u, spv16.LocalSize[0].SpecId);
        Assert.Equal(new WorkgroupDimension(1, null), spv16.LocalSize[1]);
        Assert.Equal((96u, 1u, 1u), spv16.WorkgroupSize([96]));
    }

    [Fact]
    public void OnlyVaryingModulesOnDevicesThatVaryArePinned()
    {
        var spv16 = Layout.Layout;
        Assert.Equal(new SubgroupPinning(64, true), SubgroupPinning.For(TwoWidths, spv16, (256, 1, 1)));
        Assert.Equal(new SubgroupPinning(64, false), SubgroupPinning.For(TwoWidths, spv16, (96, 1, 1)));     // 96 is not whole subgroups of 64
        Assert.Equal(new SubgroupPinning(0, true), SubgroupPinning.For(TwoWidths, spv16, (2048, 1, 1)));    // past 16 subgroups of 64
        Assert.Equal(new SubgroupPinning(64, false), SubgroupPinning.For(TwoWidths, spv16, (32, 1, 1)));    // one partial subgroup
        Assert.Equal(new SubgroupPinning(0, false), SubgroupPinning.For(TwoWidths, spv16, (2080, 1, 1)));   // neither, nor whole subgroups of 64
        Assert.Equal(SubgroupPinning.None, SubgroupPinning.For(TwoWidths, Kernels.ScaleAdd.Layout, (256, 1, 1)));
        Assert.Equal(SubgroupPinning.None, SubgroupPinning.For(TwoWidths with { SubgroupSizeControl = false }, spv16, (256, 1, 1)));
        Assert.Equal(new SubgroupPinning(0, true), SubgroupPinning.For(TwoWidths with { RequiredSubgroupSizeCompute = false }, spv16, (256, 1, 1)));
        Assert.Equal(new SubgroupPinning(64, false), SubgroupPinning.For(TwoWidths with { ComputeFullSubgroups = false }, spv16, (256, 1, 1)));
    }

    /// <summary>Tensor-core kernels are offered only where their subgroup layout holds.</summary>
    [Fact]
    public void WithoutPinningADeviceThatVariesOffersNoTensorCoreKernels()
    {
        Assert.True(TwoWidths.SubgroupLayoutHolds);
        Assert.True((TwoWidths with { MinSubgroupSize = 64, SubgroupSizeControl = false }).SubgroupLayoutHolds);   // one size
        Assert.False((TwoWidths with { RequiredSubgroupSizeCompute = false }).SubgroupLayoutHolds);
        Assert.False((TwoWidths with { ComputeFullSubgroups = false }).SubgroupLayoutHolds);
        var coopmat = TwoWidths with
        {
            CooperativeMatrixKhr = true,
            VulkanMemoryModel = true,
            Maintenance4 = true,
            CooperativeMatrixShapes = [new CooperativeMatrixShape(16, 16, 16, "f16", "f16", "f32", "f32")],
        };
        Assert.True(coopmat.Supports(ShaderFeatures.KhrCooperativeMatrix));
        Assert.Equal(ShaderFeatures.None, (coopmat with { SubgroupSizeControl = false }).ShaderFeatures);
        var tensorCoreKernel = new KernelSource(typeof(SubgroupPinningTests).Assembly, "shaders/test/subgroup_layout.spv", ShaderFeatures.KhrCooperativeMatrix);
        Assert.Contains("picks 32..64 per pipeline and cannot be asked for one",
            tensorCoreKernel.WhyNotRunnable(coopmat with { SubgroupSizeControl = false }));
        Assert.Null(tensorCoreKernel.WhyNotRunnable(coopmat));
        Assert.Equal(gpu.Device.Capabilities.SubgroupLayoutHolds, gpu.Device.Capabilities.MinSubgroupSize == gpu.Device.Capabilities.MaxSubgroupSize
            || SubgroupPinning.For(gpu.Device.Capabilities, Layout.Layout, (gpu.Device.Capabilities.SubgroupSize, 1, 1)) is { RequiredSize: > 0, FullSubgroups: true });
    }

    /// <summary>On this device, a SPIR-V 1.6 kernel sees the subgroups the host sized its workgroup in: full, in order.</summary>
    [Fact]
    public void Spv16KernelsRunInTheSubgroupsTheHostSizedThemFor()
    {
        var caps = gpu.Device.Capabilities;
        var size = caps.SubgroupSize;
        foreach (var subgroups in new uint[] { 1, 3, Math.Max(1, Math.Min(8, caps.MaxWorkgroupInvocationsX / size)) })
        {
            var local = subgroups * size;
            var kernel = gpu.Device.GetKernel(Layout, [local]);
            Assert.Equal(SubgroupPinning.For(caps, Layout.Layout, (local, 1, 1)), kernel.Pinning);
            using var output = gpu.Device.CreateBuffer<uint>(4 * local, "layout");
            using (var s = gpu.Device.BeginStream())
            {
                s.Fill(output, uint.MaxValue);   // poison: every element must be written
                s.Dispatch(kernel, (1, 1, 1), output);
                s.Submit();
            }

            var v = output.Download();
            for (uint i = 0; i < local; i++)
            {
                Assert.Equal((size, subgroups, i / size, i % size), (v[4 * i], v[4 * i + 1], v[4 * i + 2], v[4 * i + 3]));
            }
        }
    }
}
