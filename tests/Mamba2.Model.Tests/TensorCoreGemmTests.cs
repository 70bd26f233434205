using Mamba2.Model.Ops;
using Mamba2.Model.Tensors;
using Mamba2.Model.Tests.Reference;
using Mamba2.Tests;
using Mamba2.Vulkan;
using Xunit;

namespace Mamba2.Model.Tests;

/// <summary>
/// The tensor-core GEMM (shaders/tc/gemm_coopmat.comp) in each variant: f16 and bf16 operands, KHR subgroup-scope
/// fragments and NV coopmat2 workgroup-scope matrices. Checked against float64 twice: on the operands rounded as
/// the kernel rounds them (only fp32 accumulation differs), and on the exact inputs at the tolerance of the
/// precision policy (fp32-fast 2e-3 for f16 operands, bf16 1e-2). A variant this build or device lacks must fail
/// with a MissingFeatureException that says why; MAMBA2_TEST_REQUIRE (e.g. "khr_coopmat,nv_coopmat2,bf16", as CI
/// sets it on a lavapipe with cooperative matrices) turns a missing variant into a failure.
/// </summary>
public class TensorCoreGemmTests(GpuFixture gpu)
{
    public const string RequireVariable = "MAMBA2_TEST_REQUIRE";

    private static readonly (GemmOperands, TensorCoreApi, OperandStaging)[] AllVariants =
        [.. from operands in new[] { GemmOperands.F16, GemmOperands.Bf16, GemmOperands.Bf16ViaF16 }
            from api in new[] { TensorCoreApi.Khr, TensorCoreApi.NvCooperativeMatrix2 }
            from staging in new[] { OperandStaging.InKernel, OperandStaging.Converted }
            where operands != GemmOperands.Bf16ViaF16 || staging == OperandStaging.Converted   // scaled: converted only
            select (operands, api, staging)];

    public static TheoryData<GemmOperands, TensorCoreApi, OperandStaging> Variants => new(AllVariants);

    public static TheoryData<GemmOperands, TensorCoreApi, OperandStaging, int, int, int, bool, bool> Sizes
    {
        get
        {
            var data = new TheoryData<GemmOperands, TensorCoreApi, OperandStaging, int, int, int, bool, bool>();
            (int, int, int, bool, bool)[] sizes =
            [
                (1, 1, 1, false, false), (17, 33, 65, true, false), (65, 17, 130, false, true), (129, 131, 37, true, true),
                (64, 64, 32, false, false), (200, 130, 96, false, false), (7, 100, 3, true, true),
            ];
            foreach (var (operands, api, staging) in AllVariants)
            {
                foreach (var (m, n, k, ta, tb) in sizes)
                {
                    data.Add(operands, api, staging, m, n, k, ta, tb);
                }
            }

            return data;
        }
    }

    [Theory]
    [MemberData(nameof(Sizes))]
    public void MatchesFloat64Reference(GemmOperands operands, TensorCoreApi api, OperandStaging staging, int m, int n, int k, bool ta, bool tb) =>
        Check(operands, api, staging, 1, m, n, k, ta, tb, 1f, 0f);

    [Theory]
    [MemberData(nameof(Variants))]
    public void AlphaBetaAndBatches(GemmOperands operands, TensorCoreApi api, OperandStaging staging)
    {
        Check(operands, api, staging, 1, 45, 70, 31, false, true, -0.5f, 0.75f);
        Check(operands, api, staging, 3, 19, 70, 40, true, false, 1.25f, 1f);
        Check(operands, api, staging, 2, 33, 64, 48, false, false, 1f, 0f);   // word-aligned rows and batch strides
    }

    [Theory]
    [MemberData(nameof(Variants))]
    public void SplitKWhereTheOutputHasFewTiles(GemmOperands operands, TensorCoreApi api, OperandStaging staging)
    {
        Assert.Equal(2, TensorCoreGemm.SplitsFor(1, 4096, 32));   // parts of 2048 at least
        Check(operands, api, staging, 1, 40, 72, 4096, true, false, 0.5f, 0f);   // the dW shape: A stored K x M
        Check(operands, api, staging, 1, 24, 40, 4096, false, true, 1f, 0f);
        Assert.Equal(2, TensorCoreGemm.SplitsFor(1, 4133, 32));   // a last part shorter than the first (2053 of 2080)
        Check(operands, api, staging, 1, 24, 40, 4133, false, false, 1f, 0f);   // the LM head's d hidden: K = vocabulary
        Check(operands, api, staging, 1, 40, 24, 4133, true, true, 0.5f, 0f);
    }

    [Theory]
    [MemberData(nameof(Variants))]
    public void ForcedSplitKGivesTheSameProducts(GemmOperands operands, TensorCoreApi api, OperandStaging staging)
    {
        // MAMBA2_GEMM_SPLIT_K: any count of parts, cut down to those that leave the last part some of K.
        using var forced = OpTuning.Override(gpu.Device, t => t with { GemmSplitK = 5 });
        Check(operands, api, staging, 1, 40, 72, 300, true, false, 0.5f, 0f);    // parts of 64 (BK 32), the last 44
        Check(operands, api, staging, 1, 24, 40, 1000, false, true, 1f, 0f);
        Check(operands, api, staging, 1, 24, 40, 90, false, false, 1f, 0f);     // cut to the parts that fit: 32, 32, 26
    }

    [Theory]
    [MemberData(nameof(Variants))]
    public void TunedVariantStandsInForAuto(GemmOperands operands, TensorCoreApi api, OperandStaging staging)
    {
        // MAMBA2_GEMM_API: a product that leaves the variant to the device runs the one named (or says why it cannot).
        using var tuned = OpTuning.Override(gpu.Device, t => t with { GemmApi = api });
        Assert.Equal(TensorCoreGemm.WhyNot(gpu.Device, operands, api, staging), TensorCoreGemm.WhyNot(gpu.Device, operands, TensorCoreApi.Auto, staging));
        Check(operands, TensorCoreApi.Auto, staging, 1, 45, 70, 31, false, true, 1f, 0f);
    }

    [Theory]
    [MemberData(nameof(Variants))]
    public void TunedTileStandsInForTheChosenOne(GemmOperands operands, TensorCoreApi api, OperandStaging staging)
    {
        // MAMBA2_GEMM_TC_TILE: products that leave the tile to the device take the one named, or refuse it by name.
        if (TensorCoreGemm.WhyNot(gpu.Device, operands, api, staging) is not null)
        {
            Check(operands, api, staging, 1, 45, 70, 31, false, true, 1f, 0f);   // says why, as untuned
            return;
        }

        var khr = TensorCoreGemm.Resolve(gpu.Device.Capabilities, operands, api) == TensorCoreApi.Khr;
        using (OpTuning.Override(gpu.Device, t => t with { GemmTile = khr ? "64x32x32/32x16/1" : "64x64x32" }))
        {
            Check(operands, api, staging, 1, 45, 70, 100, false, true, 1f, 0f);
            Check(operands, api, staging, 2, 70, 33, 64, true, false, 0.5f, 1f);
        }

        foreach (var bad in new[] { khr ? "4096x4096x32/64x64" : "4096x4096x32", "128x128", "64x64x32/x16" })
        {
            using var tuned = OpTuning.Override(gpu.Device, t => t with { GemmTile = bad });
            using var g = new GemmCase(gpu.Device, 1, 40, 40, 40, false, false, 0f);
            var e = Assert.Throws<ArgumentException>(() => Gemm.Run(g.A, g.B, g.C, operands: operands, api: api, staging: staging));
            Assert.Contains($"{TensorCoreGemm.TileVariable}={bad}", e.Message);
        }
    }

    [Theory]
    [InlineData("khr", TensorCoreApi.Khr)]
    [InlineData(" Coopmat2 ", TensorCoreApi.NvCooperativeMatrix2)]
    [InlineData("auto", null)]
    [InlineData(null, null)]
    public void ApiVariableNamesAVariant(string? text, TensorCoreApi? expected) =>
        Assert.Equal(expected, TensorCoreGemm.ParseApi(text));

    [Fact]
    public void UnknownApiNamesTheVariable()
    {
        var e = Assert.Throws<ArgumentException>(() => TensorCoreGemm.ParseApi("cuda"));
        Assert.Contains("MAMBA2_GEMM_API=cuda", e.Message);
    }

    [Fact]
    public void ForcedSplitsKeepTheLastPartNonEmpty()
    {
        Assert.Equal(5, TensorCoreGemm.UsableSplits(5, 300, 32));
        Assert.Equal(3, TensorCoreGemm.UsableSplits(5, 90, 32));   // parts of 32, 32 and 26
        Assert.Equal(1, TensorCoreGemm.UsableSplits(3, 32, 32));
        Assert.Equal(1, TensorCoreGemm.UsableSplits(0, 4096, 32));
        Assert.Equal(16, TensorCoreGemm.UsableSplits(16, 16384, 32));
    }

    [Fact]
    public void SplitKOnlyForFewTilesAndLongK()
    {
        Assert.Equal(8, TensorCoreGemm.SplitsFor(140, 16384, 32));   // the 370m dW product on 128 x 256 tiles
        Assert.Equal(4, TensorCoreGemm.SplitsFor(140, 8192, 32));   // parts of 2048 at least
        Assert.Equal(1, TensorCoreGemm.SplitsFor(512, 16384, 32));   // tiles enough
        Assert.Equal(1, TensorCoreGemm.SplitsFor(140, 4000, 32));    // too short to split
        Assert.Equal(8, TensorCoreGemm.SplitsFor(140, 50280, 32));   // parts of 6304, the last 6152
        Assert.Equal(6304, TensorCoreGemm.SplitLength(50280, 8, 32));
        Assert.Equal(8, TensorCoreGemm.SplitsFor(100, 16384, 32));
    }

    [Theory]
    [MemberData(nameof(Variants))]
    public void LargeTilesWhereTheProblemFillsThem(GemmOperands operands, TensorCoreApi api, OperandStaging staging) =>
        Check(operands, api, staging, 1, 300, 260, 100, false, false, 1f, 0f);

    [Theory]
    [MemberData(nameof(Variants))]
    public void TilesOfLargeOutputsGiveTheSameProducts(GemmOperands operands, TensorCoreApi api, OperandStaging staging)
    {
        // The tiles a large output and a wide one get (KHR: 128 x 128 of 4 subgroups, 128 x 256 of 8), on small
        // problems: edge tiles, transposes, a batch, split K.
        if (ChosenTile(operands, api, staging) is null)
        {
            return;   // Check covers the refusal
        }

        foreach (var (m, n) in new[] { (16384, 4384), (4384, 1024) })
        {
            var tile = ChosenTile(operands, api, staging, m, n)!;
            Check(operands, api, staging, 1, 200, 300, 100, false, true, 1f, 0f, tile);
            Check(operands, api, staging, 2, 129, 131, 96, true, false, -0.5f, 0.75f, tile);
            Check(operands, api, staging, 1, 130, 257, 64, false, false, 1f, 0f, tile);
            Check(operands, api, staging, 1, 40, 300, 4100, true, false, 1f, 0f, tile);
        }
    }

    /// <summary>
    /// Tiles wholly inside the matrices walk their whole K slices with each slice loaded an iteration ahead, then
    /// hand a partial last slice to the general loop: K with no whole slice, one, and three or eight plus a partial
    /// one, in the tiles and transposes the tests above already build (no new pipelines for the CPU driver to compile).
    /// </summary>
    [Theory]
    [MemberData(nameof(Variants))]
    public void InteriorTilesLoadTheirSlicesAhead(GemmOperands operands, TensorCoreApi api, OperandStaging staging)
    {
        if (ChosenTile(operands, api, staging) is null)
        {
            return;   // Check covers the refusal
        }

        var large = ChosenTile(operands, api, staging, 16384, 4384)!;
        var (m, n, bk) = ((int)large.BM * 2, (int)large.BN * 2, (int)large.BK);
        Check(operands, api, staging, 1, m, n, 3 * bk + 4, false, true, 1f, 0f, large);
        Check(operands, api, staging, 2, m, n, bk / 2 + 4, true, false, -0.5f, 0.75f, large);
        Check(operands, api, staging, 1, m, n, bk, false, false, 1f, 0f, large);
        Check(operands, api, staging, 1, m, n, 8 * bk + 8, false, false, 1f, 0f, large);
    }

    /// <summary>
    /// Edge fragments (staged through shared memory, a subgroup barrier each) beside interior ones (stored directly)
    /// in one tile: every fragment of C is written. Shapes where lavapipe once left fragments unwritten, with the
    /// tile chosen for them and the one a large output gets (KHR with 16 x 16 fragments: 128 x 128 of 64 x 64 blocks).
    /// </summary>
    [Theory]
    [MemberData(nameof(Variants))]
    public void EdgeFragmentsBesideInteriorOnesAreAllWritten(GemmOperands operands, TensorCoreApi api, OperandStaging staging)
    {
        if (ChosenTile(operands, api, staging) is null)
        {
            return;   // Check covers the refusal
        }

        Check(operands, api, staging, 1, 300, 328, 64, false, false, 1f, 0f);
        Check(operands, api, staging, 1, 300, 392, 64, false, false, 1f, 0f);
        Check(operands, api, staging, 1, 200, 300, 100, false, true, 1f, 0f);
        var large = ChosenTile(operands, api, staging, 16384, 4384)!;
        Check(operands, api, staging, 1, 40, 72, 64, false, false, 1f, 0f, large);
        Check(operands, api, staging, 1, 100, 72, 64, false, false, 1f, 0f, large);
    }

    [Theory]
    [MemberData(nameof(Variants))]
    public void OneSharedBufferGivesTheSameProducts(GemmOperands operands, TensorCoreApi api, OperandStaging staging)
    {
        // One buffer: the next slice is written over the current one after a barrier instead of into the other.
        if (ChosenTile(operands, api, staging) is not { } chosen)
        {
            return;   // Check covers the refusal
        }

        var tile = chosen with { Buffers = 1 };
        Check(operands, api, staging, 1, 129, 131, 100, true, false, 1f, 0f, tile);   // 4 slices, edge tiles
        Check(operands, api, staging, 2, 33, 64, 97, false, true, -0.5f, 0.75f, tile);
    }

    [Fact]
    public void RequiredVariantsAreAvailable()
    {
        var required = (Environment.GetEnvironmentVariable(RequireVariable) ?? "")
            .Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        var device = gpu.Device;
        foreach (var name in required)
        {
            var feature = ShaderBuild.ProbeNames.FirstOrDefault(p => p.ProbeName == name).Feature;
            Assert.True(feature != ShaderFeatures.None, $"{RequireVariable}: unknown feature '{name}'");
            Assert.True(ShaderBuild.Of(typeof(Gemm).Assembly).Features.HasFlag(feature), $"{RequireVariable}: the shader build lacks {name}");
            Assert.True(device.Capabilities.Supports(feature), $"{RequireVariable}: {device.Name} lacks {name}");
        }

        if (required.Contains("khr_coopmat"))
        {
            Assert.True(TensorCoreGemm.IsAvailable(device, GemmOperands.F16, TensorCoreApi.Khr));
            Assert.True(TensorCoreGemm.IsAvailable(device, GemmOperands.Bf16ViaF16, TensorCoreApi.Khr));   // bf16 mode without bf16 matrices
        }

        if (required.Contains("nv_coopmat2"))
        {
            Assert.True(TensorCoreGemm.IsAvailable(device, GemmOperands.F16, TensorCoreApi.NvCooperativeMatrix2));
        }
    }

    [Fact]
    public void Bf16ValuesAsF16AreConvertedFirst()
    {
        var device = gpu.Device;
        if (!TensorCoreGemm.IsAvailable(device, GemmOperands.Bf16ViaF16))
        {
            return;
        }

        // Their scale needs the tensor's max before any product: a GEMM that rounds as it stages cannot have it.
        var why = TensorCoreGemm.WhyNot(device, GemmOperands.Bf16ViaF16, staging: OperandStaging.InKernel);
        Assert.NotNull(why);
        Assert.Contains("Converted", why);
        Assert.Null(TensorCoreGemm.WhyNot(device, GemmOperands.Bf16ViaF16));
        using var g = new GemmCase(device, 1, 5, 6, 7, false, false, 0f);
        Assert.Throws<MissingFeatureException>(() => Gemm.Run(g.A, g.B, g.C, operands: GemmOperands.Bf16ViaF16, staging: OperandStaging.InKernel));
    }

    [Fact]
    public void Fp32OperandsNeverUseTensorCores() =>
        Assert.False(TensorCoreGemm.IsAvailable(gpu.Device, GemmOperands.Fp32));

    /// <summary>Round to nearest even, as OpFConvert does (f16 through Half, bf16 by hand).</summary>
    public static float Round(float v, GemmOperands operands)
    {
        if (operands == GemmOperands.F16)
        {
            return (float)(Half)v;
        }

        return KeepSignificantBits(v, 8);
    }

    /// <summary>
    /// v as fp32-fast's scaled f16 operands hold it: multiplied by a power of two, rounded to f16 and divided back, which
    /// is v rounded to nearest even at f16's 11 significant bits wherever the scaled value is a normal f16 (every
    /// element within 2^29 of its tensor's largest).
    /// </summary>
    public static float RoundScaledF16(float v) => KeepSignificantBits(v, 11);

    /// <summary>v rounded to nearest even at <paramref name="bits"/> significant bits (fp32's exponent kept).</summary>
    private static float KeepSignificantBits(float v, int bits)
    {
        var dropped = 24 - bits;
        var u = BitConverter.SingleToUInt32Bits(v);
        u += (1u << (dropped - 1)) - 1 + ((u >> dropped) & 1);
        return BitConverter.UInt32BitsToSingle(u & ~((1u << dropped) - 1));
    }

    /// <summary>The power of two that maps max |x| into [2^14, 2^15) (shaders/include/operand_scale.glsl).</summary>
    public static float OperandScale(float absMax) =>
        absMax == 0 || !float.IsFinite(absMax) ? 1f : MathF.ScaleB(1f, Math.Clamp(15 - (MathF.ILogB(absMax) + 1), -126, 126));

    [Theory]
    [InlineData(GemmOperands.F16)]
    [InlineData(GemmOperands.Bf16)]
    [InlineData(GemmOperands.Bf16ViaF16)]
    public void ConvertedOperandsKeepTinyAndHugeTensorsAccurate(GemmOperands operands)
    {
        // Gradients far below f16's normal range and activations beyond its largest value: scaled, they keep their
        // precision where plain f16 operands would flush them to zero or overflow.
        var device = gpu.Device;
        foreach (var (sa, sb) in new[] { (1e-9f, 1f), (3e4f, 50f), (1e-6f, 1e-6f) })
        {
            using var g = new GemmCase(device, 1, 37, 70, 66, false, true, 0f);
            using var a = Tensor.FromArray(device, "A", [.. g.AV.Select(v => v * sa)], [.. g.A.Shape]);
            using var b = Tensor.FromArray(device, "B", [.. g.BV.Select(v => v * sb)], [.. g.B.Shape]);
            if (TensorCoreGemm.WhyNot(device, operands, staging: OperandStaging.Converted) is not null)
            {
                Assert.Throws<MissingFeatureException>(() => Gemm.Run(a, b, g.C, false, true, operands: operands, staging: OperandStaging.Converted));
                return;
            }

            Gemm.Run(a, b, g.C, false, true, operands: operands, staging: OperandStaging.Converted);
            var exact = GemmReference.Run(a.ToArray(), b.ToArray(), new float[37 * 70], 1, 37, 70, 66, false, true, 1f, 0f);
            TestMath.AssertClose(g.C.ToArray(), exact, operands == GemmOperands.F16 ? 2e-3 : 1e-2, $"{operands} converted, A x{sa}, B x{sb}, seed {g.Seed}");
        }
    }

    /// <summary>The tile the device chooses for this variant (for an m x n output), or null where the variant cannot run here.</summary>
    private TensorCoreTile? ChosenTile(GemmOperands operands, TensorCoreApi api, OperandStaging staging, int m = 0, int n = 0)
    {
        var device = gpu.Device;
        if (TensorCoreGemm.WhyNot(device, operands, api, staging) is not null)
        {
            return null;
        }

        var resolved = TensorCoreGemm.Resolve(device.Capabilities, operands, api)!.Value;
        return TensorCoreGemm.ChooseTile(device.Capabilities, operands, resolved, m, n, TensorCoreGemm.ResolveStaging(device, operands, resolved, staging));
    }

    private void Check(GemmOperands operands, TensorCoreApi api, OperandStaging staging, int batch, int m, int n, int k, bool ta, bool tb, float alpha, float beta,
        TensorCoreTile? tile = null)
    {
        var device = gpu.Device;
        using var g = new GemmCase(device, batch, m, n, k, ta, tb, beta);
        if (TensorCoreGemm.WhyNot(device, operands, api, staging) is not null)
        {
            var e = Assert.Throws<MissingFeatureException>(() => Gemm.Run(g.A, g.B, g.C, ta, tb, alpha, beta, operands: operands, api: api, staging: staging));
            Assert.Contains($"{operands} operands", e.Message);
            Assert.True(e.Message.Contains("not compiled") || e.Message.Contains("device lacks") || e.Message.Contains("lists no"), e.Message);
            return;
        }

        Gemm.Run(g.A, g.B, g.C, ta, tb, alpha, beta, operands: operands, api: api, staging: staging, tensorTile: tile);
        var actual = g.C.ToArray();
        var what = $"{operands} {api} {staging} {tile} gemm b{batch} {m}x{n}x{k} ta={ta} tb={tb} alpha={alpha} beta={beta} seed {g.Seed}";
        float[] Rounded(float[] x)
        {
            // Converted operands are rounded after their tensor's power-of-two scale (exact both ways).
            var scale = staging == OperandStaging.Converted ? OperandScale(x.Max(MathF.Abs)) : 1f;
            return [.. x.Select(v => Round(v * scale, operands) / scale)];
        }

        var rounded = GemmReference.Run(Rounded(g.AV), Rounded(g.BV), g.CV, batch, m, n, k, ta, tb, alpha, beta);
        TestMath.AssertClose(actual, rounded, 1e-5, what + " (on rounded operands)");
        var exact = GemmReference.Run(g.AV, g.BV, g.CV, batch, m, n, k, ta, tb, alpha, beta);
        TestMath.AssertClose(actual, exact, operands == GemmOperands.F16 ? 2e-3 : 1e-2, what + " (on exact operands)");
    }
}
