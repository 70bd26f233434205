using Mamba2.Vulkan;
using Xunit;

namespace Mamba2.Model.Tests;

/// <summary>
/// A call run out of memory at each of its allocations in turn, or, where it makes more than <c>places</c>, at one
/// random allocation in each of <c>places</c> equal parts of them: each run must throw the typed out-of-memory, and
/// <c>after</c> checks what it left (given which allocation failed, for its message). The call must allocate the same
/// sequence each time (warm it up first); one uncounted run counts them.
/// </summary>
internal static class OutOfMemorySweep
{
    public static void Run(GpuDevice device, int places, Random rng, Action call, Action<string> after)
    {
        var memory = device.Memory;
        var start = memory.Requests;
        call();
        var count = memory.Requests - start;
        Assert.True(count > 0, "the call allocates nothing: there is nothing to run out of");
        var failing = count <= places
            ? Enumerable.Range(0, (int)count).Select(i => (long)i)
            : Enumerable.Range(0, places).Select(i => (long)((i + rng.NextDouble()) * count / places));
        foreach (var k in failing)
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
