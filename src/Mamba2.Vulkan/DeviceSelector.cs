using Silk.NET.Vulkan;

namespace Mamba2.Vulkan;

/// <summary>Picks a device: the override (index or name substring) if given, else discrete, integrated, virtual, CPU.</summary>
public static class DeviceSelector
{
    public static PhysicalDeviceInfo Choose(IReadOnlyList<PhysicalDeviceInfo> devices, string? requested)
    {
        if (devices.Count == 0)
        {
            throw new VulkanUnavailableException(
                "No Vulkan 1.2 device with a compute queue was found. For the CPU driver: sudo apt-get install mesa-vulkan-drivers");
        }

        if (string.IsNullOrWhiteSpace(requested))
        {
            return devices.OrderBy(d => Rank(d.Type)).ThenByDescending(d => d.DeviceLocalBytes).ThenBy(d => d.Index).First();
        }

        var available = string.Join(", ", devices.Select(d => $"{d.Index}: {d.Name}"));
        if (int.TryParse(requested, out var index))
        {
            return devices.FirstOrDefault(d => d.Index == index)
                ?? throw new ArgumentException($"Device index {index} does not exist (MAMBA2_VK_DEVICE / --device). Available: {available}", nameof(requested));
        }

        return devices.FirstOrDefault(d => d.Name.Contains(requested, StringComparison.OrdinalIgnoreCase))
            ?? throw new ArgumentException($"No device name contains \"{requested}\" (MAMBA2_VK_DEVICE / --device). Available: {available}", nameof(requested));
    }

    private static int Rank(PhysicalDeviceType type) => type switch
    {
        PhysicalDeviceType.DiscreteGpu => 0,
        PhysicalDeviceType.IntegratedGpu => 1,
        PhysicalDeviceType.VirtualGpu => 2,
        PhysicalDeviceType.Cpu => 3,
        _ => 4,
    };
}
