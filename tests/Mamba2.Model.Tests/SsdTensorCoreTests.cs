using Mamba2.Model.Ops;
using Mamba2.Model.Ops.Ssd;
using Mamba2.Model.Tensors;
using Mamba2.Model.Tests.Reference;
using Mamba2.Tests;
using Mamba2.Vulkan;
using Xunit;

namespace Mamba2.Model.Tests;

/// <summary>
/// The SSD with its products on tensor cores (<see cref="SsdOptions.Precision"/> fp32-fast and bf16: tc/chunk_cb,
/// tc/chunk_state, tc/chunk_scan) against the float64 recurrence, each mode at its own tolerance. Where the build
/// or the device lacks the kernels the forward must fail saying why (MAMBA2_TEST_REQUIRE turns that into a failure).
/// </summary>
public class SsdTensorCoreTests(GpuFixture gpu)
{
    private GpuDevice Device => gpu.Device;

    public static readonly Precision[] Modes = [Precision.Fp32Fast, Precision.Bf16];

    public static TheoryData<string, Precision> Cases()
    {
        var data = new TheoryData<string, Precision>();
        foreach (var name in new[] { "all-options", "plain", "shorter-than-chunk", "odd-chunk", "one-past-chunk", "wide", "many-groups", "head-blocks", "clamped-no-softplus", "awkward", "state-blocks", "long-strong-decay", "long-weak-decay", "tiny-and-huge", "strided", "whole-tiles", "whole-tiles-no-d" })
        {
            foreach (var mode in Modes)
            {
                data.Add(name, mode);
            }
        }

        return data;
    }

    private static SsdCase MakeCase(string name, Random rng) => name switch
    {
        "long-strong-decay" => SsdCases.Make(rng, 1, 2048, 2, 8, 1, 8, 256, d: true, init: true, decay: 8.0),
        "long-weak-decay" => SsdCases.Make(rng, 1, 2048, 2, 8, 1, 8, 256, d: true, init: true, decay: 1e-4),
        // Inputs far from 1: x tiny, B and C large; per-slice scaling keeps f16 operands in range.
        "tiny-and-huge" => Scaled(SsdCases.Make(rng, 1, 90, 2, 16, 1, 16, 32, d: true, init: true), 1e-6f, 300f),
        "strided" => Strided(rng),
        // Ungated, D one per head or none, widths the tiles divide: with f16 operands (fp32-fast) the forward's
        // chunk_scan keeps the output in its accumulators (D x loaded into them, y stored from them) on every tile but
        // the last chunk's, which ends early; with bf16 ones these cases take the staged epilogue.
        "whole-tiles" => SsdCases.Make(rng, 2, 300, 3, 64, 1, 32, 128, d: true, bias: true, init: true, softplus: true),
        "whole-tiles-no-d" => SsdCases.Make(rng, 1, 300, 2, 64, 1, 32, 128, softplus: true),
        _ => SsdForwardTests.MakeCase(name, rng),
    };

    /// <summary>
    /// Widths and chunks that the device's tiles divide, and a last chunk they do not: most slices take the kernels'
    /// strided reads (inside memory, rows on 16-byte boundaries), the last chunk's the bounded ones.
    /// </summary>
    private static SsdCase Strided(Random rng) => SsdCases.Make(rng, 2, 300, 3, 64, 1, 64, 128, d: true, z: true, bias: true, init: true, softplus: true);

    private static (SsdCase Case, bool HasDFinal) MakeBackwardCase(string name, Random rng) => name switch
    {
        "strided" => (Strided(rng), true),
        // dcb's plane (a chunk's 17 x 17 per batch, chunk and group) ends off the offset alignment: its two partials
        // are summed into a plane of their own, not into the first.
        "odd-chunk" => (SsdCases.Make(rng, 1, 40, 4, 8, 1, 8, 17, d: true, z: true, init: true, softplus: true, bias: true), true),
        _ => SsdBackwardTests.MakeCase(name, rng),
    };

    private static SsdCase Scaled(SsdCase c, float x, float bc) => c with
    {
        X = [.. c.X.Select(v => v * x)],
        B = [.. c.B.Select(v => v * bc)],
        C = [.. c.C.Select(v => v * bc)],
        InitialStates = c.InitialStates is null ? null : [.. c.InitialStates.Select(v => v * x * bc)],
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void ForwardMatchesTheRecurrenceAtTheModesTolerance(string name, Precision precision)
    {
        var seed = TestMath.NewSeed();
        var c = MakeCase(name, new Random(seed));
        var what = $"{name} {precision.Name()} seed {seed}";
        using var inputs = new SsdDeviceInputs(Device, c, SsdPath.Auto, precision);
        if (SsdOp.WhyNot(Device, precision) is { } why)
        {
            var required = Environment.GetEnvironmentVariable(TensorCoreGemmTests.RequireVariable) ?? "";
            // bf16 runs on f16 cooperative matrices where a device has no bf16 ones.
            Assert.False(required.Contains("khr_coopmat"), $"{TensorCoreGemmTests.RequireVariable}={required}: {why}");
            var e = Assert.Throws<MissingFeatureException>(() => inputs.Forward());
            Assert.Contains(precision.Name(), e.Message);
            Assert.Equal(why + ".", e.Message);
            return;
        }

        SsdForwardTests.Verify(Device, c, SsdPath.Auto, what, precision);
    }

    /// <summary>
    /// bf16's products as scaled f16 (MAMBA2_BF16_PRODUCTS=f16, what devices without bf16 cooperative matrices run):
    /// forward and backward at bf16's tolerance, through the f16 kernels' per-slice scaling.
    /// </summary>
    [Theory]
    [InlineData("all-options")]
    [InlineData("strided")]
    [InlineData("tiny-and-huge")]
    [InlineData("long-strong-decay")]
    public void Bf16ValuesAsF16MatchAtBf16sTolerance(string name)
    {
        var seed = TestMath.NewSeed();
        using var tuning = OpTuning.Override(Device, t => t with { Bf16Products = GemmOperands.Bf16ViaF16 });
        if (SsdOp.WhyNot(Device, Precision.Bf16) is not null)
        {
            return;   // ForwardMatchesTheRecurrenceAtTheModesTolerance holds the refusal to its reason
        }

        var what = $"{name} bf16 via f16 seed {seed}";
        SsdForwardTests.Verify(Device, MakeCase(name, new Random(seed)), SsdPath.Auto, what, Precision.Bf16);
        if (name is "all-options" or "strided")
        {
            var (c, hasDFinal) = MakeBackwardCase(name, new Random(seed));
            SsdBackwardTests.Verify(Device, c, SsdPath.Auto, Precision.Bf16, hasDFinal, seed, what);
        }
    }

    /// <summary>Tiles the default does not take: a K slice of 64, narrow subgroup blocks, 4 subgroups; a bad one is refused.</summary>
    [Theory]
    [InlineData("64,64,64,32,32")]
    [InlineData("32,64,32,16,32")]
    [InlineData("64,64,32,32,32")]
    [InlineData("64,64,48,32,32")]
    public void ForcedTilesMatch(string tile)
    {
        var seed = TestMath.NewSeed();
        var c = SsdCases.Make(new Random(seed), 2, 130, 4, 24, 2, 40, 64, d: true, dPerP: true, z: true, bias: true, init: true, softplus: true);
        if (SsdOp.WhyNot(Device, Precision.Fp32Fast) is not null)
        {
            return;
        }

        using var tuning = OpTuning.Override(Device, t => t with { TensorCoreTile = tile });
        SsdForwardTests.Verify(Device, c, SsdPath.Auto, $"tile {tile} seed {seed}", Precision.Fp32Fast);

        using var inputs = new SsdDeviceInputs(Device, c, SsdPath.Auto, Precision.Fp32Fast);
        foreach (var refused in new[] { "65,64,32,32,32", "64,64,32", "scan=64,64,32,32,32;dstate=64,64,32,32,32", "state:64,64,32,32,32" })
        {
            using var bad = OpTuning.Override(Device, t => t with { TensorCoreTile = refused });
            var e = Assert.Throws<ArgumentException>(() => inputs.Forward());
            Assert.Contains($"{SsdTensorCoreTiles.EnvironmentVariable}={refused}", e.Message);
        }
    }

    /// <summary>
    /// The families' default tiles: dC/dB (and in bf16 chunk_state) twice as wide as the rest where d_state is wider
    /// than the default tile, the default elsewhere; a family forced alone leaves the others at their defaults.
    /// </summary>
    [Fact]
    public void FamiliesWidenOnlyWhereDStateExceedsTheDefaultTile()
    {
        var caps = Device.Capabilities;
        if (SsdTensorCoreTile.Default(caps, bf16: false) is not { } scan)
        {
            Assert.Null(SsdTensorCoreTiles.Choose(caps, bf16: false, 64));
            return;
        }

        // fp32-fast's fused bidirectional pass: twice as tall on as many subgroups, where that fits
        var tallBlocks = scan with { BM = 2 * scan.BM, WM = 2 * scan.WM };
        var bidir = tallBlocks.Fits(caps) ? tallBlocks : scan;
        var narrow = SsdTensorCoreTiles.Choose(caps, bf16: false, (int)scan.BN)!;
        Assert.Equal(new SsdTensorCoreTiles(scan, scan, scan, scan, bidir), narrow);   // fp32-fast's forward chunk_scan too
        var wide = SsdTensorCoreTiles.Choose(caps, bf16: false, (int)scan.BN + 1)!;
        Assert.Equal(scan, wide.Scan);
        Assert.Equal(scan, wide.State);   // fp32-fast's chunk_state stays narrow
        // fp32-fast's dC/dB: twice as wide on as many subgroups, each twice as tall, where that fits
        var wideDbc = scan with { BN = 2 * scan.BN, WM = 2 * scan.WM };
        Assert.Equal(wideDbc.Fits(caps) ? wideDbc : scan, wide.Dbc);

        var forced = SsdTensorCoreTiles.Choose(caps, bf16: false, (int)scan.BN + 1, "dbc=" + Text(scan))!;
        Assert.Equal(new SsdTensorCoreTiles(scan, scan, scan, scan, bidir), forced);
        var y = SsdTensorCoreTiles.Choose(caps, bf16: false, (int)scan.BN, "scan=" + Text(scan with { BK = 2 * scan.BK }) + ";y=" + Text(scan))!;
        Assert.Equal(new SsdTensorCoreTiles(scan with { BK = 2 * scan.BK }, scan, scan, scan, scan with { BK = 2 * scan.BK }), y);
        var b = SsdTensorCoreTiles.Choose(caps, bf16: false, (int)scan.BN, "bidir=" + Text(scan))!;
        Assert.Equal(new SsdTensorCoreTiles(scan, scan, scan, scan, scan), b);
        if (SsdTensorCoreTile.Default(caps, bf16: true) is { } b16)
        {
            // bf16's forward chunk_scan and fused bidirectional pass: twice as tall, on twice the subgroups, where that fits
            var tall = b16 with { BM = 2 * b16.BM, Threads = 2 * b16.Threads };
            var chosen = SsdTensorCoreTiles.Choose(caps, bf16: true, (int)b16.BN)!;
            Assert.Equal(tall.Fits(caps) ? tall : b16, chosen.Y);
            Assert.Equal(chosen.Y, chosen.Bidir);
        }

        static string Text(SsdTensorCoreTile t) => $"{t.BM},{t.BN},{t.BK},{t.WM},{t.WN}";
    }

    /// <summary>What `./mamba2 devices` prints of the SSD's tensor cores: each family's tile per operand type, or why there are none.</summary>
    [Fact]
    public void TheDeviceListingNamesEveryFamilysTile()
    {
        var caps = Device.Capabilities;
        var lines = SsdOp.DescribeTensorCores(caps, Device.Name).ToList();
        GemmOperands[] operands = [GemmOperands.F16, GemmOperands.Bf16, GemmOperands.Bf16ViaF16];
        Assert.Equal(operands.Length, lines.Count);
        foreach (var (line, o) in lines.Zip(operands))
        {
            if (SsdOp.WhyNotTensorCores(caps, Device.Name, o) is { } why)
            {
                Assert.Equal($"SSD {o}: none ({why})", line);
                continue;
            }

            // bf16 values as f16 run the f16 kernels' tiles.
            var bf16 = o == GemmOperands.Bf16;
            var narrow = SsdTensorCoreTiles.Choose(caps, bf16, 1)!;
            Assert.StartsWith($"SSD {o}: scan {narrow.Scan}, state {narrow.State}, dbc {narrow.Dbc}, y {narrow.Y}, bidir {narrow.Bidir}", line);
            var wide = SsdTensorCoreTiles.Choose(caps, bf16, (int)narrow.Scan.BN + 1)!;
            Assert.Equal(wide != narrow,
                line.Contains($"; d_state above {narrow.Scan.BN}: scan {wide.Scan}, state {wide.State}, dbc {wide.Dbc}, y {wide.Y}, bidir {wide.Bidir}"));
        }
    }

    /// <summary>
    /// Each family at its own tile (d_state-wide dC/dB and chunk_state, a narrow scan, a taller forward chunk_scan): the
    /// gradients of a forward and backward that both take them.
    /// </summary>
    [Theory]
    [InlineData("state-128")]
    [InlineData("wide")]
    [InlineData("all-options")]
    public void FamiliesAtTheirOwnTilesMatch(string name)
    {
        var seed = TestMath.NewSeed();
        var (c, hasDFinal) = SsdBackwardTests.MakeCase(name, new Random(seed));
        if (SsdTensorCoreTile.Default(Device.Capabilities, bf16: false) is not { } scan || SsdOp.WhyNot(Device, Precision.Fp32Fast) is not null)
        {
            return;
        }

        var (m, n, k) = (scan.TM, scan.TN, scan.TK);
        var tile = $"scan={2 * m},{4 * n},{2 * k},{m},{n};state={4 * m},{4 * n},{2 * k},{2 * m},{2 * n};dbc={4 * m},{8 * n},{2 * k},{2 * m},{2 * n};y={8 * m},{4 * n},{4 * k},{2 * m},{n}";
        using var tuning = OpTuning.Override(Device, t => t with { TensorCoreTile = tile });
        SsdBackwardTests.Verify(Device, c, SsdPath.Auto, Precision.Fp32Fast, hasDFinal, seed, $"tiles {tile} seed {seed}");
    }

    /// <summary>
    /// A tile whose epilogue staging (a fragment per subgroup, 16 subgroups) is larger than its operand tiles (a K
    /// slice of one fragment): the shared array they share is sized by the staging. Forward and backward, every family.
    /// </summary>
    [Fact]
    public void StagingLargerThanTheOperandTilesMatches()
    {
        var seed = TestMath.NewSeed();
        var (c, hasDFinal) = SsdBackwardTests.MakeCase("all-options", new Random(seed));
        if (SsdTensorCoreTile.Default(Device.Capabilities, bf16: false) is not { } scan || SsdOp.WhyNot(Device, Precision.Fp32Fast) is not null)
        {
            return;
        }

        var (m, n, k) = (scan.TM, scan.TN, scan.TK);
        var tile = $"{4 * m},{4 * n},{k},{m},{n}";
        var forced = SsdTensorCoreTile.Parse(Device.Capabilities, bf16: false, tile, "the test's tile")!;
        Assert.True(forced.StagingBytes > forced.OperandTileBytes, $"staging {forced.StagingBytes} bytes, tiles {forced.OperandTileBytes}");
        Assert.Equal(16u, forced.Threads / Device.Capabilities.SubgroupSize);
        using var tuning = OpTuning.Override(Device, t => t with { TensorCoreTile = tile });
        SsdBackwardTests.Verify(Device, c, SsdPath.Auto, Precision.Fp32Fast, hasDFinal, seed, $"tile {tile} seed {seed}");
    }

    /// <summary>
    /// The backward at a forced tile (32 x 32 subgroup blocks) over more heads than the 16 whose decay factors dB and
    /// dC load at once, so their second batch of factors and their row dots (W read from memory) are both exercised.
    /// </summary>
    [Fact]
    public void ManyHeadsBackwardAtAForcedTileMatches()
    {
        const string tile = "64,64,32,32,32";
        var seed = TestMath.NewSeed();
        var (c, hasDFinal) = SsdBackwardTests.MakeCase("many-heads", new Random(seed));
        if (SsdOp.WhyNot(Device, Precision.Fp32Fast) is not null)
        {
            return;
        }

        using var tuning = OpTuning.Override(Device, t => t with { TensorCoreTile = tile });
        SsdBackwardTests.Verify(Device, c, SsdPath.Auto, Precision.Fp32Fast, hasDFinal, seed, $"tile {tile} seed {seed}");
    }

    public static TheoryData<string, Precision> BackwardCases()
    {
        var data = new TheoryData<string, Precision>();
        foreach (var name in new[] { "all-options", "plain", "odd-sizes", "one-past-chunk", "head-splits", "many-heads", "state-128", "many-groups", "clamped-no-softplus", "wide", "strong-decay", "shorter-than-chunk", "awkward", "state-blocks", "many-chunks", "strided", "odd-chunk" })
        {
            foreach (var mode in Modes)
            {
                data.Add(name, mode);
            }
        }

        return data;
    }

    /// <summary>
    /// The backward of a tensor-core forward (its chunk_state and dx on tensor cores, the rest fp32 on what the
    /// forward saved) against the adjoint of the recurrence, at the mode's tolerance.
    /// </summary>
    [Theory]
    [MemberData(nameof(BackwardCases))]
    public void BackwardMatchesTheAdjointAtTheModesTolerance(string name, Precision precision)
    {
        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        var (c, hasDFinal) = MakeBackwardCase(name, rng);
        if (SsdOp.WhyNot(Device, precision) is not null)
        {
            return;   // the forward test holds the refusal to its reason
        }

        SsdBackwardTests.Verify(Device, c, SsdPath.Auto, precision, hasDFinal, seed, $"{name} {precision.Name()} seed {seed}");
    }

    /// <summary>
    /// A batch larger than one binding runs in pieces on tensor cores too, the pieces taking C.B^T's and dcb's scratch
    /// in turn (two pieces of four: pieces are whole multiples of four elements, for aligned offsets).
    /// </summary>
    [Theory]
    [InlineData(Precision.Bf16)]
    [InlineData(Precision.Fp32Fast)]
    public void BatchPiecesShareTheProductsScratch(Precision precision)
    {
        var seed = TestMath.NewSeed();
        var c = SsdCases.Make(new Random(seed), 8, 45, 3, 8, 1, 8, 16, d: true, z: true, init: true, softplus: true, bias: true);
        if (SsdOp.WhyNot(Device, precision) is not null)
        {
            return;   // the forward test holds the refusal to its reason
        }

        // dcb's partials, the widest binding: 2 x 3 chunks x 16 x 16 floats, 6,144 bytes a batch element.
        using var tuning = OpTuning.Override(Device, t => t with { MaxBindingBytes = 4 * 6144 });
        SsdBackwardTests.Verify(Device, c, SsdPath.Auto, precision, true, seed, $"batch pieces {precision.Name()} seed {seed}");
    }

    /// <summary>Both bidirectional forms compose two tensor-core causal runs, forward and backward (shifted g, mirrored runs).</summary>
    [Theory]
    [InlineData(SsdDirection.BidirectionalSum, Precision.Fp32Fast, false)]
    [InlineData(SsdDirection.BidirectionalShift, Precision.Fp32Fast, false)]
    [InlineData(SsdDirection.BidirectionalSum, Precision.Bf16, false)]
    [InlineData(SsdDirection.BidirectionalSum, Precision.Fp32Fast, true)]
    [InlineData(SsdDirection.BidirectionalShift, Precision.Fp32Fast, true)]
    [InlineData(SsdDirection.BidirectionalShift, Precision.Bf16, true)]
    public void BidirectionalFormsCompose(SsdDirection direction, Precision precision, bool strided)
    {
        var seed = TestMath.NewSeed();
        var rng0 = new Random(seed);
        // strided: mirrored and shifted runs through the kernels' strided reads (see Strided).
        var c = strided
            ? SsdCases.Bidirectional(rng0, direction, 1, 300, 2, 64, 1, 64, 128, d: true, z: true, bias: true, softplus: true, reverseTensors: true)
            : SsdCases.Bidirectional(rng0, direction, 2, 77, 4, 12, 2, 16, 32, d: true, z: true, bias: true, softplus: true, reverseTensors: true);
        VerifyBidirectional(c, precision, fused: false, $"{direction}{(strided ? " strided" : "")} {precision.Name()} seed {seed}", seed);
    }

    /// <summary>
    /// Both bidirectional forms fuse on tensor cores where their scans share B and C (one output pass over both scans,
    /// C.B^T once), forward and backward (with a final-state gradient): with the reverse scan's own dt or without, D
    /// of both shapes, z, a partial last chunk, strided reads, and long sequences with strong and weak decay.
    /// </summary>
    [Theory]
    [InlineData(SsdDirection.BidirectionalSum, "small", Precision.Fp32Fast)]
    [InlineData(SsdDirection.BidirectionalSum, "small-dt-rev", Precision.Bf16)]
    [InlineData(SsdDirection.BidirectionalSum, "strided", Precision.Bf16)]
    [InlineData(SsdDirection.BidirectionalSum, "strided-dt-rev", Precision.Fp32Fast)]
    [InlineData(SsdDirection.BidirectionalSum, "long-strong-decay", Precision.Bf16)]
    [InlineData(SsdDirection.BidirectionalSum, "long-weak-decay", Precision.Fp32Fast)]
    [InlineData(SsdDirection.BidirectionalShift, "small", Precision.Bf16)]
    [InlineData(SsdDirection.BidirectionalShift, "small-dt-rev", Precision.Fp32Fast)]
    [InlineData(SsdDirection.BidirectionalShift, "strided", Precision.Fp32Fast)]
    [InlineData(SsdDirection.BidirectionalShift, "strided-dt-rev", Precision.Bf16)]
    [InlineData(SsdDirection.BidirectionalShift, "long-strong-decay", Precision.Fp32Fast)]
    [InlineData(SsdDirection.BidirectionalShift, "long-weak-decay", Precision.Bf16)]
    public void BidirectionalFormsFuseOnTensorCores(SsdDirection direction, string name, Precision precision)
    {
        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        var ownDt = name.EndsWith("-dt-rev", StringComparison.Ordinal);
        var c = name switch
        {
            "long-strong-decay" => SsdCases.Make(rng, 1, 2048, 2, 8, 1, 8, 256, d: true, decay: 8.0) with { Direction = direction },
            "long-weak-decay" => SsdCases.Make(rng, 1, 2048, 2, 8, 1, 8, 256, d: true, decay: 1e-4) with { Direction = direction },
            _ when name.StartsWith("strided", StringComparison.Ordinal) =>
                SsdCases.Bidirectional(rng, direction, 1, 300, 2, 64, 1, 64, 128, d: true, z: true, bias: true, softplus: true, reverseTensors: ownDt),
            _ => SsdCases.Bidirectional(rng, direction, 2, 77, 4, 12, 2, 16, 32, d: true, dPerP: true, z: true, bias: true, softplus: true,
                reverseTensors: ownDt),
        };
        c = c with { BRev = null, CRev = null };   // shared B and C; dt_rev where named
        VerifyBidirectional(c, precision, fused: true, $"fused {direction} {name} {precision.Name()} seed {seed}", seed, dFinal: true);
    }

    private void VerifyBidirectional(SsdCase c, Precision precision, bool fused, string what, int seed, bool dFinal = false)
    {
        if (SsdOp.WhyNot(Device, precision) is not null)
        {
            return;
        }

        var rng = new Random(seed + 1);
        var dy = TestMath.Uniform(rng, (long)c.Batch * c.SeqLen * c.Heads * c.HeadDim, -1, 1);
        var dFin = dFinal ? TestMath.Uniform(rng, (long)c.Batch * c.Heads * c.HeadDim * c.DState, -1, 1) : null;
        using var inputs = new SsdDeviceInputs(Device, c, SsdPath.Auto, precision);
        Assert.Equal(fused, SsdOp.UsesFusedPass(Device, inputs.Options));
        using var dyT = Tensor.FromArray(Device, "dy", dy, c.Batch, c.SeqLen, c.Heads, c.HeadDim);
        using var dFinT = dFin is null ? null : Tensor.FromArray(Device, "dfinal_states", dFin, c.Batch, c.Heads, c.HeadDim, c.DState);
        using var s = Device.BeginStream();
        using var result = inputs.Forward(s);
        using var grads = SsdOp.Backward(dyT, result, dFinT, s);
        Poison.Fill(grads.Named().Select(g => g.Gradient).Append(result.Y).Append(result.FinalStates));
        s.Submit();
        var v = c.ToFloat64();
        var (y, final) = SsdBidirectionalReference.Forward(c, v);
        TestMath.AssertClose(result.Y.ToArray(), y, precision.Tolerance(), $"{what}: y");
        TestMath.AssertClose(result.FinalStates.ToArray(), final, precision.Tolerance(), $"{what}: final_states (forward scan)");
        var expected = SsdBidirectionalReference.Gradients(c, v, Widen(dy), dFin is null ? null : Widen(dFin));
        var actual = grads.Named().ToDictionary(g => g.Input, g => g.Gradient.ToArray());
        foreach (var (input, reference) in expected.Named())
        {
            TestMath.AssertClose(actual[input], reference, expected.ErrorScale(input, reference), precision.Tolerance(), $"{what}: grad_{input}");
        }
    }

    [Fact]
    public void PathsThatComputeInFp32OnlyRefuseOtherPrecisions()
    {
        var c = SsdCases.Make(new Random(1), 1, 20, 2, 8, 1, 8, 16);
        using var inputs = new SsdDeviceInputs(Device, c, SsdPath.Recurrent, Precision.Fp32Fast);
        var e = Assert.Throws<ArgumentException>(() => inputs.Forward());
        Assert.Equal("precision", e.ParamName);
        Assert.Contains("recurrent path", e.Message);

        // On tensor cores the fused pass takes scans that share B and C, with D of shape (h) or (h, p).
        foreach (var (direction, reverseTensors, dPerToken, reason) in new[]
                 {
                     (SsdDirection.BidirectionalShift, true, false, "share B and C"), (SsdDirection.BidirectionalSum, true, false, "share B and C"),
                     (SsdDirection.BidirectionalShift, false, true, "D of shape (h) or (h, p)"),
                 })
        {
            var bi = SsdCases.Bidirectional(new Random(2), direction, 1, 20, 2, 8, 1, 8, 16, d: dPerToken, dPerToken: dPerToken, reverseTensors: reverseTensors);
            using var biInputs = new SsdDeviceInputs(Device, bi, SsdPath.Auto, Precision.Bf16);
            Assert.False(SsdOp.UsesFusedPass(Device, biInputs.Options));
            e = Assert.Throws<ArgumentException>(() => SsdOp.Forward(biInputs.X, biInputs.Dt, biInputs.A, biInputs.B, biInputs.C,
                biInputs.Options with { BidirectionalPath = SsdBidirectionalPath.Fused }));
            Assert.Equal("precision", e.ParamName);
            Assert.Contains("fused bidirectional", e.Message);
            Assert.Contains(reason, e.Message);
        }
    }

    private static double[] Widen(float[] a) => Array.ConvertAll(a, v => (double)v);
}
