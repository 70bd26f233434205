using Mamba2.Model.Tensors;
using Mamba2.Tests;
using Xunit;

namespace Mamba2.Model.Tests;

public class ScratchPoolTests(GpuFixture gpu)
{
    [Fact]
    public void SameNameAndShapeShareATensorAndDisposeFreesThemAll()
    {
        var mem = gpu.Device.Memory;
        var before = mem.AllocatedBytes;
        using (var pool = new ScratchPool(gpu.Device))
        {
            var a = pool.Get("scratch", 3, 5);
            Assert.Same(a, pool.Get("scratch", 3, 5));
            Assert.Equal([3, 5], a.Shape.ToArray());
            Assert.NotSame(a, pool.Get("scratch", 5, 3));   // same name, other shape: its own tensor
            Assert.NotSame(a, pool.Get("other", 3, 5));
            Assert.True(mem.AllocatedBytes >= before + 3 * 15 * sizeof(float));
        }

        Assert.Equal(before, mem.AllocatedBytes);
    }
}
