using Mamba2.Model.Ops;
using Mamba2.Model.Tensors;
using Mamba2.Model.Tests.Reference;
using Mamba2.Tests;
using Mamba2.Vulkan;
using Xunit;

namespace Mamba2.Model.Tests;

/// <summary>
/// The ops around the SSD on bf16 tensors: the conv writing x, B and C as bf16 and reading their gradients as bf16,
/// the gated norm reading y as bf16 and writing its gradient as bf16. Each against the float64 reference on the same
/// bf16 values: what is computed in fp32 from bf16 inputs at fp32's tolerance, what is written as bf16 at bf16's.
/// </summary>
public class Bf16ActivationOpsTests(GpuFixture gpu)
{
    private GpuDevice Device => gpu.Device;

    internal static double[] Widen(float[] a) => Array.ConvertAll(a, v => (double)v);

    [Theory]
    [InlineData(2, 37, new[] { 24, 8, 8 }, 4, Conv1dPadding.Causal)]
    [InlineData(1, 150, new[] { 7, 5 }, 7, Conv1dPadding.Same)]
    [InlineData(3, 9, new[] { 13 }, 4, Conv1dPadding.Causal)]
    public void ConvWritesAndReadsBf16Parts(int b, int l, int[] widths, int k, Conv1dPadding padding)
    {
        if (!Device.Capabilities.Storage16Bit)
        {
            Assert.Throws<MissingFeatureException>(() => Tensor.Empty(Device, "y", TensorDType.BF16, 1, 1, 1));
            return;
        }

        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        var c = widths.Sum();
        var what = $"b{b} L{l} parts {string.Join("+", widths)} K{k} {padding} seed {seed}";
        var xv = TestMath.Uniform(rng, (long)b * l * c, -2, 2);
        var wv = TestMath.Uniform(rng, (long)c * k, -1, 1);
        var bv = TestMath.Uniform(rng, c, -1, 1);
        var dyv = SsdBf16TensorTests.Round(TestMath.Uniform(rng, (long)b * l * c, -1, 1));
        using var x = Tensor.FromArray(Device, "x", xv, b, l, c);
        using var w = Tensor.FromArray(Device, "weight", wv, c, k);
        using var bias = Tensor.FromArray(Device, "bias", bv, c);
        var outputs = widths.Select((wd, i) => Tensor.Empty(Device, $"y{i}", TensorDType.BF16, b, l, wd)).ToList();
        var dyParts = widths.Select((wd, i) => Tensor.FromArray(Device, $"dy{i}", Columns(dyv, b * l, c, widths.Take(i).Sum(), wd), TensorDType.BF16, b, l, wd)).ToList();
        try
        {
            using var s = Device.BeginStream();
            Conv1d.Forward(x, w, bias, outputs, padding, silu: true, s);
            using var grads = Conv1d.Backward(dyParts, x, w, bias, padding, silu: true, dxInto: null, s);
            Poison.Fill([.. outputs, grads.Dx, grads.DWeight, grads.DBias]);
            s.Submit();

            var left = padding == Conv1dPadding.Causal ? k - 1 : (k - 1) / 2;
            var y = Conv1dReference.Forward(Widen(xv), Widen(wv), Widen(bv), b, l, c, k, left, silu: true);
            for (var i = 0; i < widths.Length; i++)
            {
                Assert.Equal(TensorDType.BF16, outputs[i].DType);
                var start = widths.Take(i).Sum();
                TestMath.AssertClose(outputs[i].ToArray(), Columns(y, b * l, c, start, widths[i]), Precision.Bf16.Tolerance(), $"{what}: y part {i}");
            }

            // The gradients from bf16 dy are fp32 arithmetic on the same values: fp32's tolerance.
            var (dx, dw, db) = Conv1dReference.Backward(Widen(dyv), Widen(xv), Widen(wv), Widen(bv), b, l, c, k, left, silu: true);
            TestMath.AssertClose(grads.Dx!.ToArray(), dx, 1e-5, $"{what}: dx");
            TestMath.AssertClose(grads.DWeight.ToArray(), dw, 1e-5, $"{what}: dweight");
            TestMath.AssertClose(grads.DBias!.ToArray(), db!, 1e-5, $"{what}: dbias");
        }
        finally
        {
            outputs.ForEach(t => t.Dispose());
            dyParts.ForEach(t => t.Dispose());
        }
    }

    [Fact]
    public void ConvPartsOfMixedTypesAreRefused()
    {
        if (!Device.Capabilities.Storage16Bit)
        {
            return;
        }

        using var x = Tensor.Empty(Device, "x", 1, 4, 6);
        using var w = Tensor.Empty(Device, "weight", 6, 4);
        using var a = Tensor.Empty(Device, "a", TensorDType.BF16, 1, 4, 3);
        using var f = Tensor.Empty(Device, "f", 1, 4, 3);
        var e = Assert.Throws<ArgumentException>(() => Conv1d.Forward(x, w, null, [a, f]));
        Assert.Contains("outputs[1] is float32 but outputs[0] is bfloat16", e.Message);
    }

    [Theory]
    [InlineData(new[] { 2, 33, 96 }, 24, "first")]
    [InlineData(new[] { 5, 300 }, 0, "after")]
    [InlineData(new[] { 3, 7, 20 }, 10, "none")]
    public void GatedNormReadsBf16YAndWritesABf16Gradient(int[] shape, int groupSize, string gate)
    {
        if (!Device.Capabilities.Storage16Bit)
        {
            return;
        }

        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        var dim = shape[^1];
        var n = (int)ShapeOps.Elements(shape, "x");
        var gs = groupSize == 0 ? dim : groupSize;
        var after = gate == "after";
        var what = $"{ShapeOps.Format(shape)} group {gs} gate {gate} seed {seed}";
        var xv = SsdBf16TensorTests.Round(TestMath.Uniform(rng, n, -2, 2));
        var wv = TestMath.Uniform(rng, dim, 0.5, 1.5);
        var zv = gate == "none" ? null : TestMath.Uniform(rng, n, -3, 3);
        var dyv = TestMath.Uniform(rng, n, -1, 1);
        using var x = Tensor.FromArray(Device, "x", xv, TensorDType.BF16, shape);
        using var w = Tensor.FromArray(Device, "weight", wv, dim);
        using var z = zv is null ? null : Tensor.FromArray(Device, "z", zv, shape);
        using var dy = Tensor.FromArray(Device, "dy", dyv, shape);
        using var s = Device.BeginStream();
        using var result = RmsNorm.Forward(x, w, z, 1e-5f, groupSize == 0 ? null : groupSize, normBeforeGate: after, s);
        using var grads = RmsNorm.Backward(dy, result, x, w, z, groupSize == 0 ? null : groupSize, normBeforeGate: after, s);
        Poison.Fill(result.Y, grads.Dx, grads.DWeight, grads.Dz);
        s.Submit();

        var (xd, wd, zd) = (Widen(xv), Widen(wv), zv is null ? null : Widen(zv));
        TestMath.AssertClose(result.Y.ToArray(), RmsNormReference.Forward(xd, wd, zd, 1e-5, dim, gs, after), 1e-5, $"{what}: y");
        var (dx, dw, dz) = RmsNormReference.Backward(Widen(dyv), xd, wd, zd, 1e-5, dim, gs, after);
        Assert.Equal(TensorDType.BF16, grads.Dx.DType);
        TestMath.AssertClose(grads.Dx.ToArray(), dx, Precision.Bf16.Tolerance(), $"{what}: dx (bf16)");
        TestMath.AssertClose(grads.DWeight.ToArray(), dw, 1e-5, $"{what}: dweight");
        if (dz is not null)
        {
            TestMath.AssertClose(grads.Dz!.ToArray(), dz, 1e-5, $"{what}: dz");
        }

        // The packed form reads the same bf16 x.
        if (RmsNorm.CanPack(dim, gs))
        {
            using var packed = TensorCoreGemm.EmptyPacked(Device, "y", shape, GemmOperands.Bf16);
            using var rstd = RmsNorm.ForwardPacked(x, w, z is null ? null : (ColumnView?)z, packed, 1e-5f, groupSize == 0 ? null : groupSize, after);
            TestMath.AssertClose(packed.ToArray(), RmsNormReference.Forward(xd, wd, zd, 1e-5, dim, gs, after), Precision.Bf16.Tolerance(), $"{what}: packed y");
        }
    }

    /// <summary>Columns [start, start + width) of a row-major (rows, cols) array.</summary>
    internal static T[] Columns<T>(T[] rowMajor, int rows, int cols, int start, int width)
    {
        var result = new T[rows * width];
        for (var r = 0; r < rows; r++)
        {
            Array.Copy(rowMajor, r * cols + start, result, r * width, width);
        }

        return result;
    }
}
