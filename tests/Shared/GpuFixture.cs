using Mamba2.Vulkan;

namespace Mamba2.Tests;

/// <summary>
/// One device for the whole test assembly, opened with the validation layers (synchronization validation included)
/// and no on-disk pipeline cache. MAMBA2_VK_DEVICE picks the device, as for users. Disposing it checks that tearing
/// everything down produced no validation message (leaked objects are reported then).
/// </summary>
public sealed class GpuFixture : IDisposable
{
    public GpuFixture()
    {
        Device = GpuDevice.Create(Options);
        Current = this;
        // Messages from opening the device would otherwise be drained unseen by the first test's hook.
        var messages = Device.ValidationLog.Drain();
        if (messages.Count > 0)
        {
            Device.Dispose();
            throw new ValidationMessagesException("opening the test device", messages);
        }
    }

    public static VulkanOptions Options => VulkanOptions.FromEnvironment(new VulkanOptions
    {
        Validation = true,
        SynchronizationValidation = true,
        PoisonNewBuffers = true,
        PipelineCacheDirectory = null,
    });

    /// <summary>The fixture of this test run, for hooks that xunit does not inject into.</summary>
    public static GpuFixture? Current { get; private set; }

    public GpuDevice Device { get; }

    public void Dispose()
    {
        Device.Dispose();
        Current = null;
        var messages = Device.ValidationLog.Drain();
        if (messages.Count > 0)
        {
            throw new ValidationMessagesException("disposing the test device", messages);
        }
    }
}

/// <summary>Validation messages were produced; the message lists them.</summary>
public sealed class ValidationMessagesException(string during, IReadOnlyList<ValidationMessage> messages)
    : Exception($"{messages.Count} Vulkan validation message(s) while {during}:\n" + string.Join("\n", messages))
{
    public IReadOnlyList<ValidationMessage> Messages { get; } = messages;
}
