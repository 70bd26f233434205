using Mamba2.Model.Ops;
using Mamba2.Model.Tensors;
using Mamba2.Model.Tests.Reference;
using Mamba2.Tests;
using Xunit;

namespace Mamba2.Model.Tests;

public class GemmTests(GpuFixture gpu)
{
    /// <summary>Every kernel variant: the shared-memory tiles (GPUs) and the lanes kernel (CPU drivers), in its 3- and 4-column forms.</summary>
    private static readonly string[] AllVariants = ["small", "large", "lanes3", "lanes4"];

    public static TheoryData<string> Variants => new(AllVariants);

    public static TheoryData<string, int, int, int, bool, bool> Sizes
    {
        get
        {
            var data = new TheoryData<string, int, int, int, bool, bool>();
            (int, int, int, bool, bool)[] sizes =
            [
                (1, 1, 1, false, false), (3, 5, 7, false, false), (17, 33, 65, true, false), (65, 17, 130, false, true),
                (129, 131, 37, true, true), (200, 257, 48, false, false), (64, 64, 16, false, false), (7, 100, 1, true, true),
                (257, 7, 33, false, true), (33, 1, 100, true, false),
            ];
            foreach (var variant in AllVariants)
            {
                foreach (var (m, n, k, ta, tb) in sizes)
                {
                    data.Add(variant, m, n, k, ta, tb);
                }
            }

            return data;
        }
    }

    [Theory]
    [MemberData(nameof(Sizes))]
    public void MatchesFloat64Reference(string variant, int m, int n, int k, bool ta, bool tb) =>
        Check(1, m, n, k, ta, tb, 1f, 0f, Tile(variant));

    [Theory]
    [MemberData(nameof(Variants))]
    public void AlphaBetaAccumulateIntoC(string variant) => Check(1, 45, 23, 31, false, true, -0.5f, 0.75f, Tile(variant));

    [Theory]
    [MemberData(nameof(Variants))]
    public void Batched(string variant) => Check(3, 19, 70, 29, true, false, 1.25f, 1f, Tile(variant));

    [Theory]
    [MemberData(nameof(Variants))]
    public void SameInputsSameBits(string variant)
    {
        var device = gpu.Device;
        var rng = new Random(TestMath.NewSeed());
        using var a = Tensor.FromArray(device, "a", TestMath.RandomArray(rng, 70 * 90), 70, 90);
        using var b = Tensor.FromArray(device, "b", TestMath.RandomArray(rng, 90 * 50), 90, 50);
        using var c = Tensor.Empty(device, "c", 70, 50);
        Poison.Fill(c);
        Gemm.Run(a, b, c, tile: Tile(variant));
        var first = c.ToArray();
        Poison.Fill(c);
        Gemm.Run(a, b, c, tile: Tile(variant));
        Assert.Equal(first, c.ToArray());
    }

    [Theory]
    [MemberData(nameof(Variants))]
    public void SplitKMatchesFloat64AndKeepsItsBits(string variant)
    {
        // MAMBA2_GEMM_FP32_SPLIT_K's parts, where they divide K (fewer where not); a batch or beta runs in one pass.
        var tile = Tile(variant);
        using var split = OpTuning.Override(gpu.Device, t => t with { Fp32SplitK = 4 });
        Assert.Equal(4, Gemm.Fp32Splits(gpu.Device, tile, 37, 53, 96));
        Assert.Equal(1, Gemm.Fp32Splits(gpu.Device, tile, 37, 53, 97));
        Assert.Equal(3, Gemm.Fp32Splits(gpu.Device, tile, 37, 53, 99));
        foreach (var (k, ta, tb) in new[] { (96, false, false), (96, true, false), (160, false, true), (96, true, true), (97, true, false), (99, false, false) })
        {
            Check(1, 37, 53, k, ta, tb, 0.75f, 0f, tile);
        }

        Check(1, 45, 23, 64, false, true, -0.5f, 0.75f, tile);
        Check(3, 19, 70, 32, true, false, 1.25f, 0f, tile);
        SameInputsSameBits(variant);
    }

    [Fact]
    public void Fp32SplitKSplitsOnlyFewTilesByDefaultAndOnePartTurnsItOff()
    {
        var device = gpu.Device;
        var lanes = GemmTile.Lanes(128, 128);
        foreach (var setting in new int?[] { null, 0 })
        {
            using (OpTuning.Override(device, t => t with { Fp32SplitK = setting }))
            {
                // The projections' weight gradients (162 and 72 tiles of 128 x 128 at K 16,384) split; in_proj's
                // forward (3,456 tiles) and a short K do not.
                Assert.Equal(8, Gemm.Fp32Splits(device, Gemm.Large, 3352, 768, 16384));
                Assert.Equal(8, Gemm.Fp32Splits(device, Gemm.Large, 768, 1536, 16384));
                Assert.Equal(1, Gemm.Fp32Splits(device, Gemm.Large, 16384, 3352, 768));
                Assert.Equal(1, Gemm.Fp32Splits(device, Gemm.Large, 768, 1536, 1024));
                // The CPU drivers' lanes kernel splits only when asked (auto or a number).
                Assert.Equal(setting is null ? 1 : 8, Gemm.Fp32Splits(device, lanes, 768, 1536, 16384));
            }
        }

        using (OpTuning.Override(device, t => t with { Fp32SplitK = 1 }))
        {
            Assert.Equal(1, Gemm.Fp32Splits(device, Gemm.Large, 3352, 768, 16384));
        }
    }

    [Fact]
    public void CpuDevicesChooseTheLanesKernel()
    {
        using var defaults = OpTuning.Override(gpu.Device, t => t with { GemmKernel = null });
        var expected = gpu.Device.Info.IsCpu ? GemmKernel.Lanes : GemmKernel.Shared;
        Assert.Equal(expected, Gemm.ChooseTile(gpu.Device, 2048, 296).Kernel);
        Assert.Equal(expected, Gemm.ChooseTile(gpu.Device, 7, 1).Kernel);
        using var forced = OpTuning.Override(gpu.Device, t => t with { GemmKernel = GemmKernel.Shared });
        Assert.Equal(GemmKernel.Shared, Gemm.ChooseTile(gpu.Device, 7, 1).Kernel);
    }

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
        Assert.Throws<ArgumentException>(() => Gemm.Run(a, b2, c, tile: GemmTile.Lanes(gpu.Device.Capabilities.SubgroupSize + 1, 32)));
    }

    private GemmTile Tile(string variant)
    {
        var w = gpu.Device.Capabilities.SubgroupSize;
        return variant switch
        {
            "small" => Gemm.Small,
            "large" => Gemm.Large,
            "lanes3" => GemmTile.Lanes(w, 3 * w),
            "lanes4" => GemmTile.Lanes(w, 4 * w),
            _ => throw new ArgumentOutOfRangeException(nameof(variant)),
        };
    }

    private void Check(int batch, int m, int n, int k, bool ta, bool tb, float alpha, float beta, GemmTile? tile)
    {
        using var g = new GemmCase(gpu.Device, batch, m, n, k, ta, tb, beta);
        Gemm.Run(g.A, g.B, g.C, ta, tb, alpha, beta, tile: tile);
        var expected = GemmReference.Run(g.AV, g.BV, g.CV, batch, m, n, k, ta, tb, alpha, beta);
        TestMath.AssertClose(g.C.ToArray(), expected, 1e-5,
            $"gemm b{batch} {m}x{n}x{k} ta={ta} tb={tb} tile={tile} seed {g.Seed}");
    }
}
