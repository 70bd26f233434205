using Mamba2.Vulkan;
using Xunit;

namespace Mamba2.Model.Tests;

/// <summary>
/// A call run out of memory at each of its allocations in turn: each run must throw the typed out-of-memory, and
/// <c>after</c> checks what it left (given which allocation failed, for its message). The call must allocate the same
/// sequence each time (warm it up first); one uncounted run counts them.
/// </summary>
internal static class OutOfMemorySweep
{
    public static void Run(GpuDevice device, Action call, Action<string> after)
    {
        var memory = device.Memory;
        var start = memory.Requests;
        call();
        var count = memory.Requests - start;
        Assert.True(count > 0, "the call allocates nothing: there is nothing to run out of");
        for (var k = 0L; k < count; k++)
        {
            memory.FailRequest = memory.Requests + k;
            try
            {
                Assert.Throws<OutOfDeviceMemoryException>(call);
            }
            finally
            {
                memory.FailRequest = null;
            }

            after($"allocation {k + 1} of {count} failed");
        }
    }
}
