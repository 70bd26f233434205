using Silk.NET.Vulkan;
using Xunit;

namespace Mamba2.Vulkan.Tests;

public class DeviceSelectionTests
{
    private static PhysicalDeviceInfo Fake(int index, string name, PhysicalDeviceType type, ulong vram = 1 << 30) => new()
    {
        Index = index,
        Handle = default,
        Name = name,
        Type = type,
        VendorId = 0x10DE,
        DeviceId = 1,
        DriverName = "fake",
        DriverInfo = "",
        DriverVersion = 1,
        ApiVersion = Vk.Version13,
        Heaps = [new MemoryHeapInfo(vram, true)],
        Extensions = new HashSet<string>(),
        ComputeQueueFamily = 0,
        TimestampValidBits = 64,
        PipelineCacheUuid = "00",
        Capabilities = FakeCapabilities.Gpu,
    };

    private static readonly PhysicalDeviceInfo[] Devices =
    [
        Fake(0, "llvmpipe (LLVM 15.0.6, 256 bits)", PhysicalDeviceType.Cpu),
        Fake(1, "Intel(R) Graphics", PhysicalDeviceType.IntegratedGpu),
        Fake(2, "NVIDIA H100 80GB HBM3", PhysicalDeviceType.DiscreteGpu),
    ];

    [Fact]
    public void PrefersDiscreteThenIntegratedThenCpu()
    {
        Assert.Equal(2, DeviceSelector.Choose(Devices, null).Index);
        Assert.Equal(1, DeviceSelector.Choose(Devices[..2], null).Index);
        Assert.Equal(0, DeviceSelector.Choose(Devices[..1], "").Index);
    }

    [Fact]
    public void AmongEqualTypesPrefersMoreDeviceMemory()
    {
        var two = new[] { Fake(0, "small", PhysicalDeviceType.DiscreteGpu, 8UL << 30), Fake(1, "big", PhysicalDeviceType.DiscreteGpu, 80UL << 30) };
        Assert.Equal("big", DeviceSelector.Choose(two, null).Name);
    }

    [Fact]
    public void SlotsSpreadOverTheDevicesOfTheBestKindRoundRobin()
    {
        // Data-parallel ranks of one host: rank i takes the i-th GPU; more ranks than GPUs share them; the CPU is left out.
        var host = new[] { Fake(0, "cpu", PhysicalDeviceType.Cpu), Fake(1, "gpu a", PhysicalDeviceType.DiscreteGpu), Fake(2, "gpu b", PhysicalDeviceType.DiscreteGpu) };
        Assert.Equal([1, 2, 1, 2], Enumerable.Range(0, 4).Select(slot => DeviceSelector.Choose(host, null, slot).Index));
        Assert.Equal([0, 0], Enumerable.Range(0, 2).Select(slot => DeviceSelector.Choose(host[..1], null, slot).Index));
        Assert.Equal(0, DeviceSelector.Choose(host, "cpu", 1).Index);   // a named device wins
    }

    [Fact]
    public void OverrideByIndexOrNameSubstring()
    {
        Assert.Equal(0, DeviceSelector.Choose(Devices, "0").Index);
        Assert.Equal(0, DeviceSelector.Choose(Devices, "LLVMPIPE").Index);
        Assert.Equal(1, DeviceSelector.Choose(Devices, "intel").Index);
    }

    [Fact]
    public void UnknownOverrideNamesTheAvailableDevices()
    {
        var e = Assert.Throws<ArgumentException>(() => DeviceSelector.Choose(Devices, "radeon"));
        Assert.Contains("radeon", e.Message);
        Assert.Contains("2: NVIDIA H100", e.Message);
        Assert.Throws<ArgumentException>(() => DeviceSelector.Choose(Devices, "7"));
    }

    [Fact]
    public void NoDevicesSaysWhatToInstall()
    {
        var e = Assert.Throws<VulkanUnavailableException>(() => DeviceSelector.Choose([], null));
        Assert.Contains("mesa-vulkan-drivers", e.Message);
    }
}
