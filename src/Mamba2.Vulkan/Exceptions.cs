using Silk.NET.Vulkan;

namespace Mamba2.Vulkan;

/// <summary>A Vulkan call failed. <see cref="Result"/> holds the driver's code.</summary>
public class VulkanException : Exception
{
    public VulkanException(string message, Result result = Result.ErrorUnknown, Exception? inner = null)
        : base(message, inner) => Result = result;

    public Result Result { get; }
}

/// <summary>The device (or host, for staging) ran out of memory. Nothing was leaked by the failed call.</summary>
public sealed class OutOfDeviceMemoryException : VulkanException
{
    public OutOfDeviceMemoryException(string message, Result result = Result.ErrorOutOfDeviceMemory)
        : base(message, result) { }
}

/// <summary>The device was lost (driver reset, hang, GPU fault). The <see cref="GpuDevice"/> is unusable afterwards.</summary>
public sealed class DeviceLostException : VulkanException
{
    public DeviceLostException(string message) : base(message, Result.ErrorDeviceLost) { }
}

/// <summary>A feature, extension or limit the caller needs is absent on the chosen device.</summary>
public sealed class MissingFeatureException : VulkanException
{
    public MissingFeatureException(string message) : base(message, Result.ErrorFeatureNotPresent) { }
}

/// <summary>No Vulkan loader or no usable device: the message says what to install.</summary>
public sealed class VulkanUnavailableException : VulkanException
{
    public VulkanUnavailableException(string message, Exception? inner = null)
        : base(message, Result.ErrorInitializationFailed, inner) { }
}

internal static class VkCheck
{
    /// <summary>Turns a failed <see cref="Result"/> into the matching typed exception.</summary>
    public static void Check(this Result result, string call)
    {
        if (result >= Result.Success)
        {
            return;
        }

        throw result switch
        {
            Result.ErrorOutOfDeviceMemory => new OutOfDeviceMemoryException($"{call}: out of device memory", result),
            Result.ErrorOutOfHostMemory => new OutOfDeviceMemoryException($"{call}: out of host memory", result),
            Result.ErrorDeviceLost => new DeviceLostException($"{call}: the device was lost (driver reset, hang or GPU fault)"),
            Result.ErrorFeatureNotPresent or Result.ErrorExtensionNotPresent or Result.ErrorLayerNotPresent =>
                new MissingFeatureException($"{call}: {result}"),
            Result.ErrorIncompatibleDriver => new VulkanUnavailableException(
                $"{call}: no compatible Vulkan driver (VK_ERROR_INCOMPATIBLE_DRIVER). Install one: sudo apt-get install mesa-vulkan-drivers (CPU) or your GPU vendor's driver."),
            _ => new VulkanException($"{call} failed: {result}", result),
        };
    }
}
