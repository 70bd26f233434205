using Mamba2.Model.Ops;
using Mamba2.Model.Tensors;
using Mamba2.Model.Tests.Reference;
using Mamba2.Tests;
using Xunit;

namespace Mamba2.Model.Tests;

public class GemmTests(GpuFixture gpu)
{
    public static TheoryData<int, int, int, bool, bool> Sizes => new()
    {
        { 1, 1, 1, false, false },
        { 3, 5, 7, false, false },
        { 17, 33, 65, true, false },
        { 65, 17, 130, false, true },
        { 129, 131, 37, true, true },
        { 200, 257, 48, false, false },
        { 64, 64, 16, false, false },
    };

    [Theory]
    [MemberData(nameof(Sizes))]
    public void MatchesFloat64ReferenceWithBothTiles(int m, int n, int k, bool ta, bool tb)
    {
        foreach (var tile in new[] { Gemm.Small, Gemm.Large })
        {
            Check(1, m, n, k, ta, tb, 1f, 0f, tile);
        }
    }

    [Fact]
    public void AlphaBetaAccumulateIntoC() => Check(1, 45, 23, 31, false, true, -0.5f, 0.75f, null);

    [Fact]
    public void Batched() => Check(3, 19, 70, 29, true, false, 1.25f, 1f, null);

    [Fact]
    public void ShapeErrorsNameTheArgument()
    {
        var device = gpu.Device;
        using var a = Tensor.Empty(device, "a", 4, 5);
        using var b = Tensor.Empty(device, "b", 6, 7);
        using var c = Tensor.Empty(device, "c", 4, 7);
        var e = Assert.Throws<ArgumentException>(() => Gemm.Run(a, b, c));
        Assert.Equal("b", e.ParamName);
        Assert.Contains("(5, 7)", e.Message);
        Assert.Contains("(6, 7)", e.Message);
        using var b2 = Tensor.Empty(device, "b2", 5, 7);
        using var c2 = Tensor.Empty(device, "c2", 7, 4);
        Assert.Equal("c", Assert.Throws<ArgumentException>(() => Gemm.Run(a, b2, c2)).ParamName);
        using var v = Tensor.Empty(device, "v", 5);
        Assert.Equal("a", Assert.Throws<ArgumentException>(() => Gemm.Run(v, b2, c)).ParamName);
        Assert.Throws<ArgumentException>(() => Gemm.Run(a, b2, c, tile: new GemmTile(128, 128, 64, 2, 2)));
    }

    private void Check(int batch, int m, int n, int k, bool ta, bool tb, float alpha, float beta, GemmTile? tile)
    {
        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        var device = gpu.Device;
        var av = TestMath.RandomArray(rng, batch * m * k);
        var bv = TestMath.RandomArray(rng, batch * k * n);
        var cv = beta != 0 ? TestMath.RandomArray(rng, batch * m * n) : Enumerable.Repeat(float.NaN, batch * m * n).ToArray();
        int[] Shape(int r, int c) => batch > 1 ? [batch, r, c] : [r, c];
        using var a = Tensor.FromArray(device, "a", av, ta ? Shape(k, m) : Shape(m, k));
        using var b = Tensor.FromArray(device, "b", bv, tb ? Shape(n, k) : Shape(k, n));
        using var c = Tensor.FromArray(device, "c", cv, Shape(m, n));
        Gemm.Run(a, b, c, ta, tb, alpha, beta, tile: tile);
        var expected = GemmReference.Run(av, bv, cv, batch, m, n, k, ta, tb, alpha, beta);
        TestMath.AssertClose(c.ToArray(), expected, 1e-5,
            $"gemm b{batch} {m}x{n}x{k} ta={ta} tb={tb} tile={tile} seed {seed}");
    }
}
