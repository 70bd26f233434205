using Mamba2.Model.Generation;
using Mamba2.Model.Ops;
using Mamba2.Model.Tensors;
using Mamba2.Tests;
using Mamba2.Vulkan;
using Xunit;

namespace Mamba2.Model.Tests;

public class ArgMaxTests(GpuFixture gpu)
{
    private GpuDevice Device => gpu.Device;

    [Theory]
    [InlineData(new[] { 7, 1 })]          // one column: always 0
    [InlineData(new[] { 3, 5, 300 })]
    [InlineData(new[] { 2, 1000 })]       // rows wider than any workgroup
    [InlineData(new[] { 65, 13 })]
    public void RowsMatchALeftToRightScanTiesIncluded(int[] shape)
    {
        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        var n = shape[^1];
        var rows = shape[..^1].Aggregate(1, (a, v) => a * v);
        // Few distinct values, so that most rows have ties for the maximum.
        var x = Enumerable.Range(0, rows * n).Select(_ => (float)rng.Next(-3, 4)).ToArray();
        using var t = Tensor.FromArray(Device, "x", x, shape);
        var expected = Enumerable.Range(0, rows).Select(r => Sampler.ArgMax(x.AsSpan(r * n, n))).ToArray();
        RowWorkgroups.Each(() => Assert.Equal(expected, ArgMax.Rows(t)));
    }

    [Fact]
    public void NaNNeverCounts()
    {
        float[] x = [float.NaN, 1f, 3f, float.NaN, 2f, 3f, float.NaN, float.NaN, float.NaN, -5f, float.NaN, -4f];
        using var t = Tensor.FromArray(Device, "x", x, 4, 3);
        Assert.Equal([2, 2, 0, 2], ArgMax.Rows(t));   // rows: [NaN 1 3], [NaN 2 3], all NaN, [-5 NaN -4]
    }
}
