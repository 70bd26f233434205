using Mamba2.Model.Ops;
using Mamba2.Model.Tensors;
using Mamba2.Model.Tests.Reference;
using Mamba2.Tests;
using Mamba2.Vulkan;
using Xunit;

namespace Mamba2.Model.Tests;

/// <summary>
/// The ops that read in place from in_proj's output when a bf16 model stores it as bf16 (the IN_BF16 kernel variants):
/// the conv reading xBC, the gated norm reading z, the copy of dt's columns; each with every output form it has, against
/// the float64 reference on the same bf16 values (fp32 arithmetic on them: fp32's tolerance; bf16 outputs: bf16's).
/// </summary>
public class InProjBf16OpsTests(GpuFixture gpu)
{
    private GpuDevice Device => gpu.Device;

    /// <summary>Whether bf16 tensors and packed columns can be made here; where not, asserts the refusal.</summary>
    private bool Bf16Runs()
    {
        if (Device.Capabilities.Storage16Bit)
        {
            return true;
        }

        Assert.Throws<MissingFeatureException>(() => Tensor.Empty(Device, "zxbcdt", TensorDType.BF16, 1, 1, 4));
        return false;
    }

    /// <summary>outputs: f32 (one tensor) or bf16 (three parts); dy: f32 or bf16 parts; dx: own, into (fp32 columns) or packed (bf16 columns).</summary>
    [Theory]
    [InlineData(2, 37, 4, Conv1dPadding.Causal, "f32", "f32", "own")]
    [InlineData(1, 70, 4, Conv1dPadding.Causal, "bf16", "bf16", "packed")]
    [InlineData(3, 9, 3, Conv1dPadding.Same, "bf16", "bf16", "into")]
    [InlineData(2, 33, 4, Conv1dPadding.Causal, "f32", "bf16", "packed")]
    [InlineData(1, 130, 7, Conv1dPadding.Same, "bf16", "f32", "own")]
    public void ConvReadsXAsBf16ColumnsOfTheProjection(int b, int l, int k, Conv1dPadding padding, string outputs, string dy, string dx)
    {
        if (!Bf16Runs())
        {
            return;
        }

        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        int[] widths = [12, 5, 5];
        int c = widths.Sum(), start = 7, stride = start + c + 3;   // xBC inside z | xBC | dt
        var what = $"b{b} L{l} K{k} {padding} outputs {outputs} dy {dy} dx {dx} seed {seed}";
        var whole = SsdBf16TensorTests.Round(TestMath.Uniform(rng, (long)b * l * stride, -2, 2));
        var wv = TestMath.Uniform(rng, (long)c * k, -1, 1);
        var bv = TestMath.Uniform(rng, c, -1, 1);
        var dyv = TestMath.Uniform(rng, (long)b * l * c, -1, 1);
        if (dy == "bf16")
        {
            dyv = SsdBf16TensorTests.Round(dyv);
        }

        using var proj = Tensor.FromArray(Device, "zxbcdt", whole, TensorDType.BF16, b, l, stride);
        var x = new ColumnView(proj, start, c);
        using var w = Tensor.FromArray(Device, "weight", wv, c, k);
        using var bias = Tensor.FromArray(Device, "bias", bv, c);
        var outputParts = outputs == "f32"
            ? [Tensor.Empty(Device, "y", b, l, c)]
            : widths.Select((wd, i) => Tensor.Empty(Device, $"y{i}", TensorDType.BF16, b, l, wd)).ToList();
        var dyType = dy == "bf16" ? TensorDType.BF16 : TensorDType.F32;
        var dyParts = widths.Select((wd, i) => Tensor.FromArray(Device, $"dy{i}", Bf16ActivationOpsTests.Columns(dyv, b * l, c, widths.Take(i).Sum(), wd), dyType, b, l, wd)).ToList();
        using var into = dx == "into" ? Tensor.FromArray(Device, "dzxbcdt", new float[b * l * stride], b, l, stride) : null;
        using var packed = dx == "packed" ? TensorCoreGemm.EmptyPacked(Device, "dzxbcdt", [b * l, stride], GemmOperands.Bf16) : null;
        if (packed is not null && !PackedColumns.Supported(Device, packed.Length))
        {
            outputParts.ForEach(t => t.Dispose());
            dyParts.ForEach(t => t.Dispose());
            return;   // the packed gradient's own tests say why
        }

        try
        {
            using var s = Device.BeginStream();
            Conv1d.Forward(x, w, bias, outputParts, padding, silu: true, s);
            using var grads = Conv1d.Backward(dyParts, x, w, bias, padding, silu: true, into is null ? null : (ColumnView?)new ColumnView(into, start, c),
                packed is null ? null : new PackedColumns(packed, start, c), s);
            Poison.Fill([.. outputParts, grads.Dx, grads.DWeight, grads.DBias]);
            s.Submit();

            var left = padding == Conv1dPadding.Causal ? k - 1 : (k - 1) / 2;
            var xd = Bf16ActivationOpsTests.Widen(Bf16ActivationOpsTests.Columns(whole, b * l, stride, start, c));
            var y = Conv1dReference.Forward(xd, Bf16ActivationOpsTests.Widen(wv), Bf16ActivationOpsTests.Widen(bv), b, l, c, k, left, silu: true);
            if (outputs == "f32")
            {
                TestMath.AssertClose(outputParts[0].ToArray(), y, 1e-5, $"{what}: y");
            }
            else
            {
                for (var i = 0; i < widths.Length; i++)
                {
                    TestMath.AssertClose(outputParts[i].ToArray(), Bf16ActivationOpsTests.Columns(y, b * l, c, widths.Take(i).Sum(), widths[i]), Precision.Bf16.Tolerance(), $"{what}: y part {i}");
                }
            }

            var (dxRef, dw, db) = Conv1dReference.Backward(Bf16ActivationOpsTests.Widen(dyv), xd, Bf16ActivationOpsTests.Widen(wv), Bf16ActivationOpsTests.Widen(bv), b, l, c, k, left, silu: true);
            TestMath.AssertClose(grads.DWeight.ToArray(), dw, 1e-5, $"{what}: dweight");
            TestMath.AssertClose(grads.DBias!.ToArray(), db!, 1e-5, $"{what}: dbias");
            switch (dx)
            {
                case "own":
                    TestMath.AssertClose(grads.Dx!.ToArray(), dxRef, 1e-5, $"{what}: dx");
                    break;
                case "into":
                    Assert.Null(grads.Dx);
                    TestMath.AssertClose(Bf16ActivationOpsTests.Columns(into!.ToArray(), b * l, stride, start, c), dxRef, 1e-5, $"{what}: dx in place");
                    break;
                default:
                    Assert.Null(grads.Dx);
                    TestMath.AssertClose(Bf16ActivationOpsTests.Columns(packed!.ToArray(), b * l, stride, start, c), dxRef, Precision.Bf16.Tolerance(), $"{what}: dx as bf16");
                    break;
            }
        }
        finally
        {
            outputParts.ForEach(t => t.Dispose());
            dyParts.ForEach(t => t.Dispose());
        }
    }

    [Fact]
    public void ConvRefusesABf16PlaceForAnFp32Dx()
    {
        if (!Bf16Runs())
        {
            return;
        }

        using var x = Tensor.Empty(Device, "zxbcdt", TensorDType.BF16, 1, 4, 6);
        using var w = Tensor.Empty(Device, "weight", 6, 4);
        using var dy = Tensor.Empty(Device, "dy", 1, 4, 6);
        using var into = Tensor.Empty(Device, "dzxbcdt", TensorDType.BF16, 1, 4, 6);
        var e = Assert.Throws<ArgumentException>(() => Conv1d.Backward([dy], x, w, null, Conv1dPadding.Causal, silu: true, dxInto: into));
        Assert.Contains("dzxbcdt", e.Message);
        Assert.Contains("float32", e.Message);
    }

    /// <summary>
    /// x: f32 or bf16 (the SSD's y); dz: own (fp32), into (fp32 columns) or packed (bf16 columns); the projection's
    /// rows <paramref name="pad"/> wider than z (a multiple of four with rows and groups of one: runs of four elements).
    /// </summary>
    [Theory]
    [InlineData(new[] { 2, 33, 48 }, 24, false, "bf16", "packed", 9)]
    [InlineData(new[] { 5, 40 }, 0, true, "f32", "own", 9)]
    [InlineData(new[] { 3, 7, 20 }, 10, false, "f32", "into", 9)]
    [InlineData(new[] { 4, 30 }, 0, true, "bf16", "into", 9)]
    [InlineData(new[] { 2, 33, 48 }, 24, false, "bf16", "packed", 8)]
    [InlineData(new[] { 5, 40 }, 0, true, "f32", "own", 8)]
    [InlineData(new[] { 4, 32 }, 0, true, "bf16", "into", 8)]
    public void GatedNormReadsZAsBf16ColumnsOfTheProjection(int[] shape, int groupSize, bool after, string xType, string dz, int pad)
    {
        if (!Bf16Runs())
        {
            return;
        }

        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        var dim = shape[^1];
        var rows = (int)(ShapeOps.Elements(shape, "x") / dim);
        var gs = groupSize == 0 ? dim : groupSize;
        int stride = dim + pad, start = 0;   // z first, as in zxbcdt
        var what = $"{ShapeOps.Format(shape)} group {gs} after {after} x {xType} dz {dz} pad {pad} seed {seed}";
        var xv = TestMath.Uniform(rng, rows * dim, -2, 2);
        var xType16 = xType == "bf16";
        if (xType16)
        {
            xv = SsdBf16TensorTests.Round(xv);
        }

        var whole = SsdBf16TensorTests.Round(TestMath.Uniform(rng, rows * stride, -3, 3));
        var wv = TestMath.Uniform(rng, dim, 0.5, 1.5);
        var dyv = TestMath.Uniform(rng, rows * dim, -1, 1);
        using var x = Tensor.FromArray(Device, "x", xv, xType16 ? TensorDType.BF16 : TensorDType.F32, shape);
        using var proj = Tensor.FromArray(Device, "zxbcdt", whole, TensorDType.BF16, [.. shape[..^1], stride]);
        var z = new ColumnView(proj, start, dim);
        using var w = Tensor.FromArray(Device, "weight", wv, dim);
        using var dy = Tensor.FromArray(Device, "dy", dyv, shape);
        using var into = dz == "into" ? Tensor.FromArray(Device, "dzxbcdt", new float[rows * stride], [.. shape[..^1], stride]) : null;
        using var packed = dz == "packed" ? TensorCoreGemm.EmptyPacked(Device, "dzxbcdt", [rows, stride], GemmOperands.Bf16) : null;
        if (packed is not null && !PackedColumns.Supported(Device, packed.Length))
        {
            return;   // the packed gradient's own tests say why
        }

        int? group = groupSize == 0 ? null : groupSize;
        using var s = Device.BeginStream();
        using var result = RmsNorm.Forward(x, w, z, 1e-5f, group, normBeforeGate: after, s);
        using var grads = RmsNorm.Backward(dy, result.Rstd, x, w, z, group, after, into is null ? null : (ColumnView?)new ColumnView(into, start, dim), s,
            packed is null ? null : new PackedColumns(packed, start, dim));
        Poison.Fill(result.Y, grads.Dx, grads.DWeight, grads.Dz);
        s.Submit();

        var (xd, wd, zd) = (Bf16ActivationOpsTests.Widen(xv), Bf16ActivationOpsTests.Widen(wv), Bf16ActivationOpsTests.Widen(Bf16ActivationOpsTests.Columns(whole, rows, stride, start, dim)));
        TestMath.AssertClose(result.Y.ToArray(), RmsNormReference.Forward(xd, wd, zd, 1e-5, dim, gs, after), 1e-5, $"{what}: y");
        var (dxRef, dw, dzRef) = RmsNormReference.Backward(Bf16ActivationOpsTests.Widen(dyv), xd, wd, zd, 1e-5, dim, gs, after);
        TestMath.AssertClose(grads.Dx.ToArray(), dxRef, xType16 ? Precision.Bf16.Tolerance() : 1e-5, $"{what}: dx");
        TestMath.AssertClose(grads.DWeight.ToArray(), dw, 1e-5, $"{what}: dweight");
        switch (dz)
        {
            case "own":
                TestMath.AssertClose(grads.Dz!.ToArray(), dzRef!, 1e-5, $"{what}: dz");
                break;
            case "into":
                TestMath.AssertClose(Bf16ActivationOpsTests.Columns(into!.ToArray(), rows, stride, start, dim), dzRef!, 1e-5, $"{what}: dz in place");
                break;
            default:
                TestMath.AssertClose(Bf16ActivationOpsTests.Columns(packed!.ToArray(), rows, stride, start, dim), dzRef!, Precision.Bf16.Tolerance(), $"{what}: dz as bf16");
                break;
        }

        // The packed forward (out_proj's bf16 operands) reads the same bf16 z.
        if (RmsNorm.CanPack(dim, gs))
        {
            using var y16 = TensorCoreGemm.EmptyPacked(Device, "y", shape, GemmOperands.Bf16);
            using var rstd = RmsNorm.ForwardPacked(x, w, z, y16, 1e-5f, group, after);
            TestMath.AssertClose(y16.ToArray(), RmsNormReference.Forward(xd, wd, zd, 1e-5, dim, gs, after), Precision.Bf16.Tolerance(), $"{what}: packed y");
        }
    }

    [Theory]
    [InlineData(37, 40, 30, 7)]   // unaligned: one element at a time
    [InlineData(16, 48, 36, 8)]   // every count a multiple of 4: four at a time
    public void ColumnsCopyWidensBf16ColumnsExactly(int rows, int cols, int from, int width)
    {
        if (!Bf16Runs())
        {
            return;
        }

        var seed = TestMath.NewSeed();
        var whole = SsdBf16TensorTests.Round(TestMath.Uniform(new Random(seed), rows * cols, -5, 5));
        using var src = Tensor.FromArray(Device, "zxbcdt", whole, TensorDType.BF16, rows, cols);
        using var dst = Tensor.Empty(Device, "dt", rows, width + 4);
        Poison.Fill(dst);
        Columns.Copy(src, from, dst, 4, width);
        var got = dst.ToArray();
        var expected = Bf16ActivationOpsTests.Columns(whole, rows, cols, from, width);
        Assert.Equal(expected, Bf16ActivationOpsTests.Columns(got, rows, width + 4, 4, width));
        Assert.All(Bf16ActivationOpsTests.Columns(got, rows, width + 4, 0, 4), v => Assert.True(float.IsNaN(v), $"seed {seed}: a column outside the copy was written"));
    }
}
