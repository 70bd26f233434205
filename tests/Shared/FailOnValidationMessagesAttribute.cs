using System.Reflection;
using Mamba2.Vulkan;
using Xunit.v3;

namespace Mamba2.Tests;

/// <summary>
/// Fails the test during which any validation message arrived: drains the log before the test and throws after it.
/// Applied to the whole assembly; tests run one at a time so every message belongs to the test that caused it.
/// </summary>
[AttributeUsage(AttributeTargets.Assembly | AttributeTargets.Class | AttributeTargets.Method)]
public sealed class FailOnValidationMessagesAttribute : BeforeAfterTestAttribute
{
    public override void Before(MethodInfo methodUnderTest, IXunitTest test) =>
        GpuFixture.Current?.Device.ValidationLog.Drain();

    public override void After(MethodInfo methodUnderTest, IXunitTest test)
    {
        if (GpuFixture.Current is { } fixture)
        {
            ThrowIfAny(fixture.Device.ValidationLog, test.TestDisplayName);
        }
    }

    public static void ThrowIfAny(ValidationLog log, string during)
    {
        var messages = log.Drain();
        if (messages.Count > 0)
        {
            throw new ValidationMessagesException(during, messages);
        }
    }
}
