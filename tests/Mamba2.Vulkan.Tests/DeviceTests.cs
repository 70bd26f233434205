using Mamba2.Tests;
using Silk.NET.Vulkan;
using Xunit;

namespace Mamba2.Vulkan.Tests;

public class DeviceTests(GpuFixture gpu)
{
    [Fact]
    public void ListsDevicesAndTheChosenOne()
    {
        var (devices, chosen) = GpuDevice.ListDevices(GpuFixture.Options);
        Assert.NotEmpty(devices);
        Assert.Contains(devices, d => d.Index == chosen);
        Assert.Equal(gpu.Device.Info.Name, devices.Single(d => d.Index == chosen).Name);
    }

    [Fact]
    public void CapabilitiesComeFromTheDevice()
    {
        var caps = gpu.Device.Capabilities;
        Assert.True(caps.SubgroupSize is >= 1 and <= 128);
        Assert.True(caps.MaxSharedMemoryBytes >= 16384, "Vulkan guarantees 16 KiB of shared memory");
        Assert.True(caps.MaxWorkgroupCount.X >= 65535);
        Assert.True(caps.MaxStorageBufferRange >= 1 << 27);
        Assert.True(caps.MaxAllocationBytes >= 1UL << 30);
        Assert.True(gpu.Device.Info.ApiVersion >= Vk.Version12);
        // Tensor-core features are enabled only with their extension, and the KHR flavour only with listed shapes.
        Assert.True(!caps.CooperativeMatrixKhr || gpu.Device.Info.Extensions.Contains("VK_KHR_cooperative_matrix"));
        Assert.True(!caps.CooperativeMatrix2Nv || gpu.Device.Info.Extensions.Contains("VK_NV_cooperative_matrix2"));
        Assert.True(!caps.Bfloat16 || gpu.Device.Info.Extensions.Contains("VK_KHR_shader_bfloat16"));
        Assert.True(!caps.Supports(ShaderFeatures.KhrCooperativeMatrix) || caps.CooperativeMatrixShapes.Count > 0);
        Assert.True(!caps.Supports(ShaderFeatures.NvCooperativeMatrix2) || caps.CooperativeMatrix2!.FlexibleShapes.Count > 0);
    }

    [Fact]
    public void TheShaderBuildRecordNamesItsCompilerAndItsOmissions()
    {
        var build = ShaderBuild.Of(typeof(GpuDevice).Assembly);
        Assert.NotEqual("?", build.Compiler);
        Assert.Contains("shaderc", build.Compiler);
        foreach (var omitted in build.Omitted)
        {
            Assert.False(string.IsNullOrWhiteSpace(omitted.Needs), $"{omitted.Variant} left out without a reason");
        }

        Assert.Equal("(no shaders)", ShaderBuild.Of(typeof(object).Assembly).Compiler);
    }

    [Fact]
    public void ResultCodesBecomeTypedExceptions()
    {
        Assert.Throws<OutOfDeviceMemoryException>(() => Result.ErrorOutOfDeviceMemory.Check("vkAllocateMemory"));
        Assert.Throws<OutOfDeviceMemoryException>(() => Result.ErrorOutOfHostMemory.Check("vkAllocateMemory"));
        Assert.Throws<DeviceLostException>(() => Result.ErrorDeviceLost.Check("vkQueueSubmit"));
        Assert.Throws<MissingFeatureException>(() => Result.ErrorFeatureNotPresent.Check("vkCreateDevice"));
        var e = Assert.Throws<VulkanException>(() => Result.ErrorInitializationFailed.Check("vkCreateInstance"));
        Assert.Equal(Result.ErrorInitializationFailed, e.Result);
        Result.Success.Check("ok");
        Result.Incomplete.Check("partial listings are not errors");
    }
}
