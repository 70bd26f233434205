namespace Mamba2.Vulkan.Tests;

/// <summary>Capabilities of a device no test opens: for the choices made from a device's listing alone.</summary>
internal static class FakeCapabilities
{
    /// <summary>A plain GPU: subgroups of 32, 48 KiB of shared memory, no optional features.</summary>
    public static readonly DeviceCapabilities Gpu = new()
    {
        SubgroupSize = 32,
        MaxSharedMemoryBytes = 49152,
        MaxWorkgroupInvocations = 1024,
        MaxWorkgroupSize = (1024, 1024, 64),
        MaxWorkgroupCount = (65535, 65535, 65535),
        MaxStorageBufferRange = uint.MaxValue,
        MaxAllocationBytes = 1UL << 32,
        MinStorageBufferOffsetAlignment = 16,
        MaxPushConstantsBytes = 128,
        TimestampPeriodNs = 1,
        Timestamps = true,
    };
}
