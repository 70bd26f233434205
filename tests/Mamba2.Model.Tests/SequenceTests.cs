using Mamba2.Model.Ops;
using Mamba2.Model.Tensors;
using Mamba2.Tests;
using Mamba2.Vulkan;
using Xunit;

namespace Mamba2.Model.Tests;

public class SequenceTests(GpuFixture gpu)
{
    private GpuDevice Device => gpu.Device;

    private static float[] Reference(float[] x, int[] shape)
    {
        int b = shape[0], l = shape[1], row = x.Length / (b * l);
        var y = new float[x.Length];
        for (var i = 0; i < b; i++)
        {
            for (var t = 0; t < l; t++)
            {
                Array.Copy(x, (i * l + (l - 1 - t)) * row, y, (i * l + t) * row, row);
            }
        }

        return y;
    }

    [Theory]
    [InlineData(new[] { 3, 7, 5 })]
    [InlineData(new[] { 2, 1, 4 })]       // L = 1: the identity
    [InlineData(new[] { 4, 33 })]         // (b, L): dt-shaped
    [InlineData(new[] { 2, 9, 3, 2 })]    // (b, L, h, p): x-shaped
    public void FlipReversesTheSequenceAxisAndIsItsOwnInverse(int[] shape)
    {
        var seed = TestMath.NewSeed();
        var x = TestMath.Uniform(new Random(seed), shape.Aggregate(1, (a, v) => a * v), -1, 1);
        using var input = Tensor.FromArray(Device, "x", x, shape);
        using var s = Device.BeginStream();
        using var once = Sequence.Flip(input, s);
        using var twice = Sequence.Flip(once, s);
        Poison.Fill(once, twice);
        s.Submit();
        Assert.Equal(Reference(x, shape), once.ToArray());
        Assert.Equal(x, twice.ToArray());
        Assert.Equal(input.Shape, once.Shape);
    }

    [Fact]
    public void FlipSlicesTheBatchWhenOneBindingCannotHoldIt()
    {
        int[] shape = [5, 6, 4];
        var x = TestMath.Uniform(new Random(TestMath.NewSeed()), 5 * 6 * 4, -1, 1);
        OpTuning.Set(Device, OpTuning.Of(Device) with { MaxBindingBytes = 2 * 6 * 4 * sizeof(float) });   // two sequences per slice: 2, 2, 1
        try
        {
            using var input = Tensor.FromArray(Device, "x", x, shape);
            using var s = Device.BeginStream();
            using var y = Sequence.Flip(input, s);
            Poison.Fill(y);
            s.Submit();
            Assert.Equal(Reference(x, shape), y.ToArray());
        }
        finally
        {
            OpTuning.Set(Device, OpTuning.Of(Device) with { MaxBindingBytes = null });
        }
    }

    [Fact]
    public void FlipNeedsASequenceAxis()
    {
        using var v = Tensor.FromArray(Device, "v", [1f, 2f], 2);
        var e = Assert.Throws<ArgumentException>(() => Sequence.Flip(v));
        Assert.Contains("(b, L, ...)", e.Message);
        Assert.Contains("got (2)", e.Message);
    }
}
