using Mamba2.Model.IO;
using Mamba2.Model.Ops;
using Mamba2.Model.Tensors;
using Mamba2.Tests;
using Mamba2.Vulkan;
using Xunit;

namespace Mamba2.Model.Tests;

/// <summary>
/// The backward ops that write the fused projection's gradient straight as bf16 operands (<see cref="PackedColumns"/>:
/// the gated norm's dz, the conv's dx, the dt columns): each element is the fp32 output of the same op rounded to
/// nearest even, in exactly its columns (odd starts and widths included), and the columns around them are untouched.
/// </summary>
public class PackedColumnsTests(GpuFixture gpu)
{
    private const ushort Untouched = 0x7FC1;   // a bf16 NaN no kernel writes

    private GpuDevice Device => gpu.Device;

    /// <summary>Columns at an odd start (one element at a time) and at a multiple of four (runs of four).</summary>
    [Theory]
    [InlineData(3, 7)]
    [InlineData(4, 8)]
    public void GatedNormDzIsItsFp32GradientRounded(int start, int pad)
    {
        var rng = new Random(TestMath.NewSeed());
        const int b = 2, l = 37, dim = 48, gs = 24;
        var wide = dim + pad;
        using var x = Tensor.FromArray(Device, "x", TestMath.Uniform(rng, b * l * dim, -2, 2), b, l, dim);
        using var z = Tensor.FromArray(Device, "z", TestMath.Uniform(rng, b * l * dim, -2, 2), b, l, dim);
        using var w = Tensor.FromArray(Device, "w", TestMath.Uniform(rng, dim, 0.5f, 1.5f), dim);
        using var dy = Tensor.FromArray(Device, "dy", TestMath.Uniform(rng, b * l * dim, -1, 1), b, l, dim);
        using var saved = RmsNorm.Forward(x, w, z, 1e-5f, gs, normBeforeGate: false);
        using var dzWide = Tensor.Empty(Device, "dz_wide", b * l, wide);
        using var reference = RmsNorm.Backward(dy, saved, x, w, z, gs, normBeforeGate: false, new ColumnView(dzWide, start, dim));
        using var packed = NewPacked(b * l, wide);
        if (Unsupported(packed, () => RmsNorm.Backward(dy, saved.Rstd, x, w, z, gs, false, null, null, new PackedColumns(packed, start, dim)).Dispose()))
        {
            return;
        }

        packed.ScaleBits.Upload([0xFFFFFFFFu]);
        using var grads = RmsNorm.Backward(dy, saved.Rstd, x, w, z, gs, false, null, null, new PackedColumns(packed, start, dim));
        Assert.Null(grads.Dz);
        TestMath.AssertClose(grads.Dx.ToArray(), [.. reference.Dx.ToArray().Select(v => (double)v)], 1e-6, "dx beside a packed dz");
        AssertRounded(dzWide.ToArray(), packed, b * l, wide, start, dim, "dz");
        Assert.Equal(0u, packed.ScaleBits.Download()[0]);   // bf16's scale of 1, stored by the pass
    }

    /// <summary>
    /// A plain norm's dx also stored as bf16 operands (the layer below's dout): each element its own fp32 dx rounded
    /// to nearest even, every element written, the scale word 1's; runs of four (48), one at a time (50), rows that
    /// share a word (21).
    /// </summary>
    [Theory]
    [InlineData(48, true)]
    [InlineData(50, false)]
    [InlineData(21, true)]
    public void NormDxCopyIsItsFp32GradientRounded(int dim, bool withResidual)
    {
        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        const int b = 2, l = 37;
        using var x = Tensor.FromArray(Device, "x", TestMath.Uniform(rng, b * l * dim, -2, 2), b, l, dim);
        using var w = Tensor.FromArray(Device, "w", TestMath.Uniform(rng, dim, 0.5f, 1.5f), dim);
        using var dy = Tensor.FromArray(Device, "dy", TestMath.Uniform(rng, b * l * dim, -1, 1), b, l, dim);
        using var res = Tensor.FromArray(Device, "res", TestMath.Uniform(rng, b * l * dim, -1, 1), b, l, dim);
        var residual = withResidual ? res : null;
        using var saved = RmsNorm.Forward(x, w, eps: 1e-5f);
        using var reference = RmsNorm.Backward(dy, saved.Rstd, x, w, null, null, true, null, null, residual: residual);
        using var packed = NewPacked(b * l, dim);
        packed.ScaleBits.Upload([0xFFFFFFFFu]);
        if (Unsupported(packed, () => RmsNorm.Backward(dy, saved.Rstd, x, w, null, null, true, null, null, residual: residual, dxPackedInto: packed).Dispose()))
        {
            return;
        }

        using var grads = RmsNorm.Backward(dy, saved.Rstd, x, w, null, null, true, null, null, residual: residual, dxPackedInto: packed);
        var dx = grads.Dx.ToArray();
        TestMath.AssertClose(dx, [.. reference.Dx.ToArray().Select(v => (double)v)], 1e-6, $"dx beside its bf16 copy seed {seed}");
        TestMath.AssertClose(grads.DWeight.ToArray(), [.. reference.DWeight.ToArray().Select(v => (double)v)], 1e-6, $"dweight seed {seed}");
        var words = packed.Words.Download();
        for (var e = 0; e < dx.Length; e++)
        {
            var bits = (ushort)(words[e / 2] >> (16 * (e % 2)));
            Assert.True(bits == BFloat16Bits.FromSingle(dx[e]), $"element {e}: {BFloat16Bits.ToSingle(bits)} is not bf16({dx[e]}) (seed {seed})");
        }

        Assert.Equal(0u, packed.ScaleBits.Download()[0]);
    }

    [Fact]
    public void NormDxCopyRefusesWhatItCannotWrite()
    {
        var rng = new Random(TestMath.NewSeed());
        using var x = Tensor.FromArray(Device, "x", TestMath.Uniform(rng, 6 * 8, -2, 2), 6, 8);
        using var z = Tensor.FromArray(Device, "z", TestMath.Uniform(rng, 6 * 8, -2, 2), 6, 8);
        using var w = Tensor.FromArray(Device, "w", TestMath.Uniform(rng, 8, 0.5f, 1.5f), 8);
        using var dy = Tensor.FromArray(Device, "dy", TestMath.Uniform(rng, 6 * 8, -1, 1), 6, 8);
        using var saved = RmsNorm.Forward(x, w, eps: 1e-5f);
        using var packed = NewPacked(6, 8);
        using var tall = NewPacked(7, 8);
        using var f16 = TensorCoreGemm.EmptyPacked(Device, "f16", [6, 8], GemmOperands.F16);
        using var word = Device.CreateBuffer<uint>(1);
        Assert.Equal("dxPackedInto", Assert.Throws<ArgumentException>(() => RmsNorm.Backward(dy, saved.Rstd, x, w, z, null, true, null, null, dxPackedInto: packed)).ParamName);
        Assert.Equal("dxPackedInto", Assert.Throws<ArgumentException>(() =>
            RmsNorm.Backward(dy, saved.Rstd, x, w, null, null, true, null, null, dxAbsMaxInto: word, dxPackedInto: packed)).ParamName);
        Assert.Equal("dxPackedInto", Assert.Throws<ArgumentException>(() => RmsNorm.Backward(dy, saved.Rstd, x, w, null, null, true, null, null, dxPackedInto: tall)).ParamName);
        Assert.Equal("packed", Assert.Throws<ArgumentException>(() => RmsNorm.Backward(dy, saved.Rstd, x, w, null, null, true, null, null, dxPackedInto: f16)).ParamName);
    }

    [Fact]
    public void ConvDxIsItsFp32GradientRounded()
    {
        var rng = new Random(TestMath.NewSeed());
        const int b = 3, l = 41, c = 21, k = 4, wide = c + 10, start = 5;
        using var x = Tensor.FromArray(Device, "x", TestMath.Uniform(rng, b * l * c, -1, 1), b, l, c);
        using var w = Tensor.FromArray(Device, "w", TestMath.Uniform(rng, c * k, -1, 1), c, k);
        using var bias = Tensor.FromArray(Device, "bias", TestMath.Uniform(rng, c, -1, 1), c);
        using var dy = Tensor.FromArray(Device, "dy", TestMath.Uniform(rng, b * l * c, -1, 1), b, l, c);
        using var dxWide = Tensor.Empty(Device, "dx_wide", b, l, wide);
        using var reference = Conv1d.Backward([dy], x, w, bias, Conv1dPadding.Causal, silu: true, new ColumnView(dxWide, start, c));
        using var packed = NewPacked(b * l, wide);
        var into = new PackedColumns(packed, start, c);
        if (Unsupported(packed, () => Conv1d.Backward([dy], x, w, bias, Conv1dPadding.Causal, true, null, into, null).Dispose()))
        {
            return;
        }

        using var grads = Conv1d.Backward([dy], x, w, bias, Conv1dPadding.Causal, true, null, into, null);
        Assert.Null(grads.Dx);
        TestMath.AssertClose(grads.DWeight.ToArray(), [.. reference.DWeight.ToArray().Select(v => (double)v)], 1e-6, "dweight beside a packed dx");
        AssertRounded(dxWide.ToArray(), packed, b * l, wide, start, c, "dx");
    }

    [Theory]
    [InlineData(8, 0, 4, 12)]    // 16-byte reads (width, source columns and start multiples of 4)
    [InlineData(30, 3, 24, 27)]  // element by element, odd start
    public void CopiedColumnsAreTheSourceRounded(int srcCols, int srcCol, int width, int dstCols)
    {
        var rng = new Random(TestMath.NewSeed());
        const int rows = 70;
        var start = dstCols - width;
        using var src = Tensor.FromArray(Device, "src", TestMath.Uniform(rng, rows * srcCols, -3, 3), rows, srcCols);
        using var wideRef = Tensor.Empty(Device, "ref", rows, dstCols);
        Columns.Copy(src, srcCol, wideRef, start, width);
        using var packed = NewPacked(rows, dstCols);
        if (Unsupported(packed, () => Columns.Copy(src, srcCol, new PackedColumns(packed, start, width))))
        {
            return;
        }

        Columns.Copy(src, srcCol, new PackedColumns(packed, start, width));
        AssertRounded(wideRef.ToArray(), packed, rows, dstCols, start, width, "copy");
    }

    [Fact]
    public void OnlyBf16CopiesAndColumnsInsideAreAccepted()
    {
        using var packed = NewPacked(4, 6);
        Assert.Equal("width", Assert.Throws<ArgumentOutOfRangeException>(() => new PackedColumns(packed, 4, 3)).ParamName);
        using var f16 = TensorCoreGemm.EmptyPacked(Device, "f16", [4, 6], GemmOperands.F16);
        Assert.Equal("packed", Assert.Throws<ArgumentException>(() => new PackedColumns(f16, 0, 6)).ParamName);
    }

    private PackedOperand NewPacked(int rows, int cols)
    {
        var packed = TensorCoreGemm.EmptyPacked(Device, "packed", [rows, cols], GemmOperands.Bf16);
        packed.Words.Upload(Enumerable.Repeat(((uint)Untouched << 16) | Untouched, (int)packed.Words.Length).ToArray());
        return packed;
    }

    /// <summary>Where the device cannot write 16-bit columns, the op refuses with a reason (and the test ends).</summary>
    private bool Unsupported(PackedOperand packed, Action run)
    {
        if (PackedColumns.Supported(Device, packed.Length))
        {
            return false;
        }

        Assert.Throws<MissingFeatureException>(run);
        return true;
    }

    private static void AssertRounded(float[] fp32Wide, PackedOperand packed, int rows, int cols, int start, int width, string what)
    {
        var words = packed.Words.Download();
        for (var r = 0; r < rows; r++)
        {
            for (var j = 0; j < cols; j++)
            {
                var e = (r * cols) + j;
                var bits = (ushort)(words[e / 2] >> (16 * (e % 2)));
                if (j < start || j >= start + width)
                {
                    Assert.True(bits == Untouched, $"{what}: row {r} column {j} outside [{start}, {start + width}) was written");
                    continue;
                }

                // The variant's arithmetic may contract differently from the fp32 kernel's: one bf16 step either way.
                var expected = BFloat16Bits.FromSingle(fp32Wide[e]);
                Assert.True(Math.Abs(bits - expected) <= 1, $"{what}: row {r} column {j}: {BFloat16Bits.ToSingle(bits)} is not bf16({fp32Wide[e]}) = {BFloat16Bits.ToSingle(expected)}");
            }
        }
    }
}
