using Mamba2.Model.Ops.Ssd;
using Mamba2.Model.Tensors;
using Mamba2.Tests;
using Xunit;

namespace Mamba2.Model.Tests;

/// <summary>
/// A loop that records the SSD forward and backward at the 370m shape in a fresh stream each time and frees
/// everything after it (as the bench suite and a training step do) asks the driver for memory in its first call
/// only: later calls reuse the allocator's blocks. Recorded, not submitted: what is measured is the host's side.
/// </summary>
public class AllocationChurnTests(GpuFixture gpu)
{
    [Fact]
    public void ARepeatedForwardAndBackwardStopsAllocatingAfterItsFirstCall()
    {
        var d = gpu.Device;
        var limit = d.Memory.CacheLimitBytes;
        d.Memory.CacheLimitBytes = 4UL << 30;   // as on a GPU (a CPU driver keeps no cache by default)
        try
        {
            const int b = 8, l = 2048, h = 32, p = 64, n = 128;
            Tensor E(string name, params int[] shape) => Tensor.Empty(d, name, shape);
            using var x = E("x", b, l, h, p);
            using var dt = E("dt", b, l, h);
            using var a = E("A", h);
            using var bm = E("B", b, l, 1, n);
            using var cm = E("C", b, l, 1, n);
            using var dd = E("D", h);
            using var bias = E("dt_bias", h);
            using var dy = E("dy", b, l, h, p);
            var options = new SsdOptions { ChunkSize = 256, D = dd, DtBias = bias, DtSoftplus = true, Path = SsdPath.Tiled };
            var added = new List<long>();
            for (var i = 0; i < 4; i++)
            {
                var before = d.Memory.DriverAllocations;
                using (var s = d.BeginStream())
                {
                    var forward = s.Own(SsdOp.Forward(x, dt, a, bm, cm, options, s));
                    s.Own(SsdOp.Backward(dy, forward, stream: s));
                }

                added.Add(d.Memory.DriverAllocations - before);
            }

            Assert.True(added.Skip(1).All(k => k == 0), $"driver allocations per call: {string.Join(", ", added)}");
        }
        finally
        {
            d.Memory.CacheLimitBytes = limit;
        }
    }
}
