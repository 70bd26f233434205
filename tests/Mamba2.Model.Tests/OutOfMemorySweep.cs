using Mamba2.Vulkan;
using Xunit;

namespace Mamba2.Model.Tests;

/// <summary>
/// A call run out of memory at places spread over what it allocates: the device's live buffers are capped at
/// <c>held</c> plus random shares of <c>peak</c> (one in each of <c>places</c> equal parts), each run must throw the
/// typed out-of-memory, and <c>after</c> checks what it left (given the share, for its message).
/// </summary>
internal static class OutOfMemorySweep
{
    public static void Run(GpuDevice device, ulong held, ulong peak, int places, Random rng, Action call, Action<double> after)
    {
        foreach (var share in Enumerable.Range(0, places).Select(i => (i + rng.NextDouble()) / places))
        {
            device.Memory.LimitBytes = held + (ulong)(share * peak);
            try
            {
                Assert.Throws<OutOfDeviceMemoryException>(call);
            }
            finally
            {
                device.Memory.LimitBytes = null;
            }

            after(share);
        }
    }
}
