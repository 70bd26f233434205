using Mamba2.Model.Ops;
using Mamba2.Model.Tensors;
using Mamba2.Model.Tests.Reference;
using Mamba2.Tests;
using Mamba2.Vulkan;
using Xunit;

namespace Mamba2.Model.Tests;

public class Conv1dTests(GpuFixture gpu)
{
    private GpuDevice Device => gpu.Device;

    private static double[] Widen(float[] a) => Array.ConvertAll(a, v => (double)v);

    private static int Left(Conv1dPadding padding, int k) => padding == Conv1dPadding.Causal ? k - 1 : (k - 1) / 2;

    [Theory]
    [InlineData(2, 37, 67, 4, Conv1dPadding.Causal, true, true)]     // the Mamba2 layer: causal, bias, SiLU
    [InlineData(1, 3, 5, 4, Conv1dPadding.Causal, true, false)]      // sequence shorter than the kernel
    [InlineData(3, 50, 16, 7, Conv1dPadding.Same, true, true)]       // Hydra: odd width, centred
    [InlineData(2, 21, 9, 4, Conv1dPadding.Same, false, true)]       // even width "same": one more on the right
    [InlineData(1, 130, 33, 1, Conv1dPadding.Causal, false, false)]  // width 1, no bias, no activation
    [InlineData(2, 200, 40, 4, Conv1dPadding.Causal, true, true)]    // blocks of 64 positions: halos across their edges
    [InlineData(1, 150, 12, 6, Conv1dPadding.Same, true, true)]      // the same, centred, reading both sides
    public void ForwardAndGradientsMatchTheReference(int b, int l, int c, int k, Conv1dPadding padding, bool bias, bool silu)
    {
        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        var what = $"b{b} L{l} c{c} K{k} {padding} bias {bias} silu {silu} seed {seed}";
        var xv = TestMath.Uniform(rng, (long)b * l * c, -2, 2);
        var wv = TestMath.Uniform(rng, (long)c * k, -1, 1);
        var bv = bias ? TestMath.Uniform(rng, c, -1, 1) : null;
        var dyv = TestMath.Uniform(rng, (long)b * l * c, -1, 1);
        using var x = Tensor.FromArray(Device, "x", xv, b, l, c);
        using var w = Tensor.FromArray(Device, "weight", wv, c, 1, k);   // HF / mamba_ssm conv1d.weight layout
        using var bt = bv is null ? null : Tensor.FromArray(Device, "bias", bv, c);
        using var dy = Tensor.FromArray(Device, "dy", dyv, b, l, c);

        using var s = Device.BeginStream();
        using var y = Conv1d.Forward(x, w, bt, padding, silu, s);
        using var grads = Conv1d.Backward(dy, x, w, bt, padding, silu, s);
        Poison.Fill(y, grads.Dx, grads.DWeight, grads.DBias);

        s.Submit();
        var left = Left(padding, k);
        var (xd, wd, bd) = (Widen(xv), Widen(wv), bv is null ? null : Widen(bv));
        TestMath.AssertClose(y.ToArray(), Conv1dReference.Forward(xd, wd, bd, b, l, c, k, left, silu), 1e-6, $"{what}: y");
        var (dx, dw, db) = Conv1dReference.Backward(Widen(dyv), xd, wd, bd, b, l, c, k, left, silu);
        TestMath.AssertClose(grads.Dx!.ToArray(), dx, 1e-6, $"{what}: dx");
        TestMath.AssertClose(grads.DWeight.ToArray(), dw, 1e-5, $"{what}: dweight");
        Assert.Equal([c, 1, k], grads.DWeight.Shape);
        Assert.Equal(bias, grads.DBias is not null);
        if (db is not null)
        {
            TestMath.AssertClose(grads.DBias!.ToArray(), db, 1e-5, $"{what}: dbias");
        }
    }

    /// <summary>
    /// The layer's way: x read in place from columns of a wider tensor, y cut into parts, dy from parts and dx written
    /// into columns of another wide tensor, whose other columns stay as they were.
    /// </summary>
    [Theory]
    [InlineData(2, 37, new[] { 20, 8, 8 }, 4, Conv1dPadding.Causal, 5, 3)]    // x, B, C of a small layer
    [InlineData(1, 70, new[] { 9, 4 }, 3, Conv1dPadding.Same, 0, 1)]          // two parts, view at column 0
    [InlineData(2, 130, new[] { 13 }, 4, Conv1dPadding.Causal, 7, 0)]         // one part, view at the right edge
    public void ColumnViewsAndPartsMatchTheReference(int b, int l, int[] widths, int k, Conv1dPadding padding, int before, int after)
    {
        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        var c = widths.Sum();
        var what = $"b{b} L{l} parts {string.Join("+", widths)} K{k} {padding} view at {before} of {before + c + after} seed {seed}";
        int wideIn = before + c + after, wideOut = c + 2 * before + 1;
        var inv = TestMath.Uniform(rng, (long)b * l * wideIn, -2, 2);
        var wv = TestMath.Uniform(rng, (long)c * k, -1, 1);
        var bv = TestMath.Uniform(rng, c, -1, 1);
        var dyv = TestMath.Uniform(rng, (long)b * l * c, -1, 1);
        var xv = new float[b * l * c];
        for (var r = 0; r < b * l; r++)
        {
            Array.Copy(inv, (long)r * wideIn + before, xv, (long)r * c, c);
        }

        using var input = Tensor.FromArray(Device, "zxbcdt", inv, b, l, wideIn);
        using var w = Tensor.FromArray(Device, "weight", wv, c, k);
        using var bias = Tensor.FromArray(Device, "bias", bv, c);
        var outs = widths.Select((wd, i) => Tensor.Empty(Device, $"y{i}", b, l, wd)).ToArray();
        var dys = widths.Select((wd, i) => Tensor.FromArray(Device, $"dy{i}", Bf16ActivationOpsTests.Columns(dyv, b * l, c, widths.Take(i).Sum(), wd), b, l, wd)).ToArray();
        const float untouched = 7.5f;
        using var dWide = Tensor.FromArray(Device, "dzxbcdt", Enumerable.Repeat(untouched, b * l * wideOut).ToArray(), b, l, wideOut);
        try
        {
            using var s = Device.BeginStream();
            var view = new ColumnView(input, before, c);
            Conv1d.Forward(view, w, bias, outs, padding, silu: true, s);
            using var grads = Conv1d.Backward(dys, view, w, bias, padding, silu: true, new ColumnView(dWide, before, c), s);
            Assert.Null(grads.Dx);
            Poison.Fill([.. outs, grads.DWeight, grads.DBias]);
            s.Submit();

            var left = Left(padding, k);
            var (xd, wd2, bd) = (Widen(xv), Widen(wv), Widen(bv));
            var y = Conv1dReference.Forward(xd, wd2, bd, b, l, c, k, left, silu: true);
            for (var i = 0; i < widths.Length; i++)
            {
                TestMath.AssertClose(outs[i].ToArray(), Bf16ActivationOpsTests.Columns(y, b * l, c, widths.Take(i).Sum(), widths[i]), 1e-6, $"{what}: y part {i}");
            }

            var (dx, dw, db) = Conv1dReference.Backward(Widen(dyv), xd, wd2, bd, b, l, c, k, left, silu: true);
            var wide = dWide.ToArray();
            TestMath.AssertClose(Bf16ActivationOpsTests.Columns(wide, b * l, wideOut, before, c), dx, 1e-6, $"{what}: dx in its columns");
            for (var r = 0; r < b * l; r++)
            {
                for (var j = 0; j < wideOut; j++)
                {
                    if (j < before || j >= before + c)
                    {
                        Assert.True(wide[(long)r * wideOut + j] == untouched, $"{what}: dx wrote column {j} of row {r}, outside its view");
                    }
                }
            }

            TestMath.AssertClose(grads.DWeight.ToArray(), dw, 1e-5, $"{what}: dweight");
            TestMath.AssertClose(grads.DBias!.ToArray(), db!, 1e-5, $"{what}: dbias");
        }
        finally
        {
            foreach (var t in outs.Concat(dys))
            {
                t.Dispose();
            }
        }
    }

    [Fact]
    public void ReferenceGradientsMatchFiniteDifferences()
    {
        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        int b = 2, l = 6, c = 3, k = 3;
        var x = Widen(TestMath.Uniform(rng, b * l * c, -2, 2));
        var w = Widen(TestMath.Uniform(rng, c * k, -1, 1));
        var bias = Widen(TestMath.Uniform(rng, c, -1, 1));
        var dy = Widen(TestMath.Uniform(rng, b * l * c, -1, 1));
        foreach (var (left, silu) in new[] { (2, true), (1, false) })
        {
            double Loss() => Conv1dReference.Forward(x, w, bias, b, l, c, k, left, silu).Select((v, i) => v * dy[i]).Sum();
            var (dx, dw, db) = Conv1dReference.Backward(dy, x, w, bias, b, l, c, k, left, silu);
            FiniteDifferences.Check([("x", x, dx), ("weight", w, dw), ("bias", bias, db!)], Loss, $"conv1d left {left} silu {silu} seed {seed}");
        }
    }

    [Fact]
    public void WeightGradientIsDeterministic()
    {
        var rng = new Random(TestMath.NewSeed());
        using var x = Tensor.FromArray(Device, "x", TestMath.Uniform(rng, 3 * 300 * 20, -1, 1), 3, 300, 20);
        using var w = Tensor.FromArray(Device, "weight", TestMath.Uniform(rng, 20 * 4, -1, 1), 20, 4);
        using var bias = Tensor.FromArray(Device, "bias", TestMath.Uniform(rng, 20, -1, 1), 20);
        using var dy = Tensor.FromArray(Device, "dy", TestMath.Uniform(rng, 3 * 300 * 20, -1, 1), 3, 300, 20);
        using var first = Conv1d.Backward(dy, x, w, bias, silu: true);
        using var second = Conv1d.Backward(dy, x, w, bias, silu: true);
        Assert.True(first.DWeight.ToArray().AsSpan().SequenceEqual(second.DWeight.ToArray()));
        Assert.True(first.DBias!.ToArray().AsSpan().SequenceEqual(second.DBias!.ToArray()));
    }

    [Fact]
    public void BadShapesNameTheArgument()
    {
        using var x = Tensor.Empty(Device, "x", 2, 10, 8);
        using var w = Tensor.Empty(Device, "weight", 7, 4);
        var e = Assert.Throws<ArgumentException>(() => Conv1d.Forward(x, w, null));
        Assert.Equal("weight", e.ParamName);
        Assert.Contains("(8, K) or (8, 1, K)", e.Message);
        Assert.Contains("(7, 4)", e.Message);

        using var w2 = Tensor.Empty(Device, "weight", 8, 4);
        using var bias = Tensor.Empty(Device, "bias", 9);
        e = Assert.Throws<ArgumentException>(() => Conv1d.Forward(x, w2, bias));
        Assert.Equal("bias", e.ParamName);

        using var dy = Tensor.Empty(Device, "dy", 2, 11, 8);
        e = Assert.Throws<ArgumentException>(() => Conv1d.Backward(dy, x, w2, null));
        Assert.Equal("dy", e.ParamName);

        using var wide = Tensor.Empty(Device, "weight", 8, Conv1d.MaxWidth + 1);
        Assert.Throws<ArgumentOutOfRangeException>(() => Conv1d.Forward(x, wide, null));

        using var part = Tensor.Empty(Device, "x_part", 2, 10, 5);
        e = Assert.Throws<ArgumentException>(() => Conv1d.Forward(x, w2, null, [part, part]));
        Assert.Equal("outputs", e.ParamName);
        Assert.Contains("5 + 5 must add up to the 8 channels", e.Message);
        e = Assert.Throws<ArgumentException>(() => Conv1d.Forward(x, w2, null, []));
        Assert.Equal("outputs", e.ParamName);
        using var full = Tensor.Empty(Device, "dzxbcdt", 2, 10, 12);
        e = Assert.Throws<ArgumentException>(() => Conv1d.Backward([dy], x, w2, null, Conv1dPadding.Causal, false, new ColumnView(full, 0, 8)));
        Assert.Equal("dy", e.ParamName);
        using var dyOk = Tensor.Empty(Device, "dy", 2, 10, 8);
        e = Assert.Throws<ArgumentException>(() => Conv1d.Backward([dyOk], x, w2, null, Conv1dPadding.Causal, false, new ColumnView(full, 0, 7)));
        Assert.Equal("dx", e.ParamName);
        Assert.Throws<ArgumentOutOfRangeException>(() => new ColumnView(full, 5, 8));
    }
}
