using Mamba2.Model.Ops;
using Mamba2.Model.Tensors;
using Mamba2.Tests;
using Mamba2.Vulkan;
using Xunit;

namespace Mamba2.Model.Tests;

/// <summary>Column ranges: copies into the middle of a poisoned destination, by words where aligned, else by floats.</summary>
public class ColumnsTests(GpuFixture gpu)
{
    private GpuDevice Device => gpu.Device;

    [Theory]
    [InlineData(37, 3352, 1536, 1792, 1800, 4)]   // xBC of the 370m in_proj output: 16-byte words
    [InlineData(37, 3352, 3328, 24, 24, 0)]       // dt: words
    [InlineData(5, 19, 3, 7, 9, 1)]               // odd layout: floats
    [InlineData(3, 16, 4, 8, 10, 2)]              // aligned source, unaligned destination: floats
    public void CopyMovesExactlyTheRangeAndKeepsTheRest(int rows, int srcCols, int srcCol, int width, int dstCols, int dstCol)
    {
        var rng = new Random(TestMath.NewSeed());
        var sv = TestMath.RandomArray(rng, rows * srcCols);
        using var src = Tensor.FromArray(Device, "src", sv, rows, srcCols);
        using var dst = Tensor.Empty(Device, "dst", rows, dstCols);
        Poison.Fill(dst);
        Columns.Copy(src, srcCol, dst, dstCol, width);
        var got = dst.ToArray();
        for (var r = 0; r < rows; r++)
        {
            for (var j = 0; j < dstCols; j++)
            {
                var inside = j >= dstCol && j < dstCol + width;
                var v = got[r * dstCols + j];
                Assert.True(inside ? v == sv[r * srcCols + srcCol + j - dstCol] : float.IsNaN(v), $"row {r} column {j}: {v}");
            }
        }
    }

    [Fact]
    public void SplitThenConcatGivesTheSourceBack()
    {
        var rng = new Random(TestMath.NewSeed());
        var sv = TestMath.RandomArray(rng, 2 * 9 * 44);
        using var src = Tensor.FromArray(Device, "src", sv, 2, 9, 44);
        using var a = Tensor.Empty(Device, "a", 2, 9, 16);
        using var b = Tensor.Empty(Device, "b", 2, 9, 25);
        using var c = Tensor.Empty(Device, "c", 2, 9, 3);
        using var back = Tensor.Empty(Device, "back", 2, 9, 44);
        Poison.Fill(a, b, c, back);
        using (var s = Device.BeginStream())
        {
            Columns.Split(s, src, a, b, c);
            Columns.Concat(s, back, a, b, c);
            s.Submit();
        }

        Assert.Equal(sv, back.ToArray());
        using var unused = Device.BeginStream();
        Assert.Throws<ArgumentException>(() => Columns.Split(unused, src, a, b));   // the parts do not cover src
        Assert.Throws<ArgumentOutOfRangeException>(() => Columns.Copy(src, 40, a, 0, 8));
    }
}
