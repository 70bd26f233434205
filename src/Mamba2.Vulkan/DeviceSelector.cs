using Silk.NET.Vulkan;

namespace Mamba2.Vulkan;

/// <summary>
/// Picks a device: the override (index or name substring) if given, else discrete, integrated, virtual, CPU; with a
/// <c>slot</c> (several processes of one host, one per device), the slot-th of the devices of the best kind, round robin.
/// </summary>
public static class DeviceSelector
{
    public static PhysicalDeviceInfo Choose(IReadOnlyList<PhysicalDeviceInfo> devices, string? requested, int slot = 0)
    {
        if (devices.Count == 0)
        {
            throw new VulkanUnavailableException(
                "No Vulkan 1.2 device with a compute queue was found. For the CPU driver: sudo apt-get install mesa-vulkan-drivers");
        }

        if (string.IsNullOrWhiteSpace(requested))
        {
            var best = devices.Min(d => Rank(d.Type));
            var kind = devices.Where(d => Rank(d.Type) == best).OrderByDescending(d => d.DeviceLocalBytes).ThenBy(d => d.Index).ToList();
            return kind[slot % kind.Count];   // slot 0: the largest; more slots than devices share them round robin
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
