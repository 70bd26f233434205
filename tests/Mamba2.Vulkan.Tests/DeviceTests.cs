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
        if (gpu.Device.Info.Type == PhysicalDeviceType.Cpu)
        {
            Assert.False(caps.CooperativeMatrixKhr);
        }
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
