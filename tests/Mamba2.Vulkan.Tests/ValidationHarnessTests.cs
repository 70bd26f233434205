using Mamba2.Tests;
using Silk.NET.Vulkan;
using Xunit;

namespace Mamba2.Vulkan.Tests;

/// <summary>Tests of the test harness: a validation message must fail the test that caused it.</summary>
public unsafe class ValidationHarnessTests(GpuFixture gpu)
{
    /// <summary>
    /// An invalid call made on purpose: a buffer with no usage flags (VUID-VkBufferCreateInfo-usage-requiredbitmask;
    /// VUID-VkBufferCreateInfo-None-09500 in layers that know VkBufferUsageFlags2).
    /// </summary>
    private static void ProvokeValidationError(GpuDevice device)
    {
        var info = new BufferCreateInfo { SType = StructureType.BufferCreateInfo, Size = 16, Usage = 0, SharingMode = SharingMode.Exclusive };
        device.Api.CreateBuffer(device.Handle, in info, null, out var buffer);
        device.Api.DestroyBuffer(device.Handle, buffer, null);
    }

    [Fact]
    public void TheAfterTestHookFailsATestThatProvokedAValidationError()
    {
        Assert.True(gpu.Device.ValidationEnabled);
        var hook = new FailOnValidationMessagesAttribute();
        var test = (Xunit.v3.IXunitTest)TestContext.Current.Test!;
        var method = typeof(ValidationHarnessTests).GetMethod(nameof(TheAfterTestHookFailsATestThatProvokedAValidationError))!;

        hook.Before(method, test);
        ProvokeValidationError(gpu.Device);
        var e = Assert.Throws<ValidationMessagesException>(() => hook.After(method, test));
        Assert.Contains(e.Messages, m => m.MessageId?.Contains("VkBufferCreateInfo-") == true);
        Assert.Equal(0, gpu.Device.ValidationLog.Count);

        hook.Before(method, test);
        hook.After(method, test);
    }

    [Fact]
    public void ACleanLifecycleLeavesNoMessagesAndLeaksAreReported()
    {
        using (var clean = GpuDevice.Create(GpuFixture.Options))
        {
            using var x = clean.CreateBuffer<float>([1, 2, 3]);
            using var y = clean.CreateBuffer<float>(3);
            using var s = clean.BeginStream();
            Kernels.ScaleAddDispatch(s, Kernels.Get(clean), x, y, 1f, 1f, groups: 1);
            s.Timestamp("t");
            s.Submit();
            Assert.Equal([2f, 3f, 4f], y.Download());
            clean.Dispose();
            FailOnValidationMessagesAttribute.ThrowIfAny(clean.ValidationLog, "a clean lifecycle");
        }

        var leaky = GpuDevice.Create(GpuFixture.Options);
        var info = new BufferCreateInfo
        {
            SType = StructureType.BufferCreateInfo,
            Size = 64,
            Usage = BufferUsageFlags.StorageBufferBit,
            SharingMode = SharingMode.Exclusive,
        };
        leaky.Api.CreateBuffer(leaky.Handle, in info, null, out _);
        leaky.Dispose();
        var messages = leaky.ValidationLog.Drain();
        Assert.Contains(messages, m => m.Text.Contains("VkBuffer"));
    }
}
