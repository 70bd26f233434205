using Mamba2.Model.Ops;
using Mamba2.Model.Ops.Ssd;
using Mamba2.Model.Tensors;
using Mamba2.Model.Tests.Reference;
using Mamba2.Tests;
using Mamba2.Vulkan;
using Xunit;

namespace Mamba2.Model.Tests;

public class SsdBackwardTests(GpuFixture gpu)
{
    private GpuDevice Device => gpu.Device;

    /// <summary>Upstream gradients: dy everywhere, and d final_states when asked.</summary>
    private static (float[] Dy, float[]? DFinal) Upstream(Random rng, SsdCase c, bool dFinal) =>
        (TestMath.Uniform(rng, (long)c.Batch * c.SeqLen * c.Heads * c.HeadDim, -1, 1),
         dFinal ? TestMath.Uniform(rng, (long)c.Batch * c.Heads * c.HeadDim * c.DState, -1, 1) : null);

    /// <summary>Runs forward and backward on the device (gradients poisoned first) and returns them by input name.</summary>
    private static Dictionary<string, float[]> RunBackward(GpuDevice device, SsdCase c, SsdPath path, Precision precision, float[] dy, float[]? dFinal)
    {
        using var inputs = new SsdDeviceInputs(device, c, path, precision);
        using var dyT = Tensor.FromArray(device, "dy", dy, c.Batch, c.SeqLen, c.Heads, c.HeadDim);
        using var dFinalT = dFinal is null ? null : Tensor.FromArray(device, "dfinal_states", dFinal, c.Batch, c.Heads, c.HeadDim, c.DState);
        using var saved = inputs.Forward();
        using var s = device.BeginStream();
        using var grads = SsdOp.Backward(dyT, saved, dFinalT, s);
        Poison.Fill(grads.Named().Select(g => g.Gradient));

        s.Submit();
        return grads.Named().ToDictionary(g => g.Input, g => g.Gradient.ToArray());
    }

    private void Check(SsdCase c, SsdPath path, bool dFinal, int seed, string what) => Verify(Device, c, path, Precision.Fp32, dFinal, seed, what);

    /// <summary>
    /// Forward and backward on the device against the adjoint of the float64 recurrence, every gradient, at
    /// <paramref name="precision"/>'s tolerance (the tensor-core tests share it).
    /// </summary>
    internal static void Verify(GpuDevice device, SsdCase c, SsdPath path, Precision precision, bool dFinal, int seed, string what)
    {
        what = $"{what} ({path})";
        var (dy, df) = Upstream(new Random(seed + 1), c, dFinal);
        var actual = RunBackward(device, c, path, precision, dy, df);
        var expected = SsdReferenceBackward.Gradients(c, Widen(dy), df is null ? null : Widen(df));
        var names = expected.Named().Select(e => e.Name).ToList();
        Assert.Equal(names, actual.Keys);
        // Every gradient's verdict, not only the first failure's: which gradients break together locates a fault.
        var failures = expected.Named()
            .Select(e => Record.Exception(() => TestMath.AssertClose(actual[e.Name], e.Data, expected.ErrorScale(e.Name, e.Data),
                precision.Tolerance(), $"{what}: grad_{e.Name}"))?.Message)
            .OfType<string>().ToList();
        Assert.True(failures.Count == 0, string.Join(Environment.NewLine, failures));
    }

    private static double[] Widen(float[] a) => Array.ConvertAll(a, v => (double)v);

    public static TheoryData<string, SsdPath> Cases()
    {
        var data = new TheoryData<string, SsdPath>();
        foreach (var name in new[] { "all-options", "plain", "odd-sizes", "one-past-chunk", "head-splits", "many-groups", "clamped-no-softplus", "wide", "strong-decay", "shorter-than-chunk", "awkward", "state-blocks", "many-chunks" })
        {
            foreach (var path in SsdForwardTests.Paths)
            {
                data.Add(name, path);
            }
        }

        return data;
    }

    /// <summary>The backward cases by name, and whether each has a final-state gradient (the tensor-core tests reuse them).</summary>
    public static (SsdCase Case, bool DFinal) MakeCase(string name, Random rng) => name switch
    {
        // Odd L over several chunks, g > 1, D per (h, p), z, bias, softplus, initial and final state gradients,
        // dt_limit clipping some steps at both ends.
        "all-options" => (SsdCases.Make(rng, 2, 77, 4, 24, 2, 40, 32, d: true, dPerP: true, z: true, bias: true, init: true, softplus: true, dtMin: 0.05f, dtMax: 0.6f), true),
        "plain" => (SsdCases.Make(rng, 1, 100, 2, 16, 1, 16, 64), false),
        "odd-sizes" => (SsdCases.Make(rng, 2, 61, 3, 17, 1, 13, 48, d: true, z: true, softplus: true, bias: true), true),
        "one-past-chunk" => (SsdCases.Make(rng, 1, 129, 2, 16, 2, 16, 128, d: true, init: true), false),
        // 16 heads per group: the dB / dC kernel sums 2 heads per workgroup over 8 split copies.
        "head-splits" => (SsdCases.Make(rng, 1, 70, 16, 8, 1, 16, 32, d: true, z: true, softplus: true, bias: true), true),
        "many-heads" => (SsdCases.Make(rng, 1, 90, 20, 8, 1, 16, 32, d: true, z: true, init: true, softplus: true), true),
        "state-128" => (SsdCases.Make(rng, 1, 200, 3, 32, 1, 128, 64, d: true, z: true, init: true, softplus: true), true),
        "many-groups" => (SsdCases.Make(rng, 3, 50, 6, 16, 3, 24, 16, d: true, dPerP: true, softplus: true, dtMax: 0.2f), false),
        "clamped-no-softplus" => (SsdCases.Make(rng, 1, 64, 2, 16, 1, 16, 32, dtMin: 0.1f, dtMax: 0.2f, negativeDt: true), true),
        "wide" => (SsdCases.Make(rng, 1, 40, 2, 128, 1, 160, 32, d: true, z: true, init: true), true),
        // Cumsums in the hundreds within a chunk: the differences the kernels exponentiate must stay exact.
        "strong-decay" => (SsdCases.Make(rng, 1, 700, 2, 8, 1, 8, 256, d: true, init: true, decay: 8), true),
        // 19 chunks, the last one short: the reverse state passing walks them in groups of 8.
        "many-chunks" => (SsdCases.Make(rng, 1, 300, 2, 8, 1, 8, 16, d: true, init: true), true),
        "shorter-than-chunk" => (SsdCases.Make(rng, 2, 5, 2, 8, 1, 8, 64, d: true, dPerP: true, z: true, init: true), true),
        // Odd L not a multiple of the chunk, p and n neither powers of two nor multiples of 8, g > 1.
        "awkward" => (SsdCases.Make(rng, 2, 45, 6, 7, 3, 13, 16, d: true, dPerP: true, z: true, bias: true, init: true, softplus: true), true),
        // p and n past one register block of the recurrent kernels (two of each, uneven), a chunk that is not a square.
        "state-blocks" => (SsdCases.Make(rng, 1, 61, 2, 20, 1, 40, 48, d: true, z: true, init: true, softplus: true, bias: true), true),
        _ => throw new ArgumentException(name),
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void MatchesTheAdjointOfTheRecurrence(string name, SsdPath path)
    {
        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        var (c, dFinal) = MakeCase(name, rng);
        Check(c, path, dFinal, seed, $"{name} seed {seed}");
    }

    [Theory]
    [InlineData("32,32,16,8,2")]
    [InlineData("16,16,16,8,4")]
    public void ForcedScanTilesMatch(string tile)
    {
        var seed = TestMath.NewSeed();
        var c = SsdCases.Make(new Random(seed), 1, 90, 4, 40, 1, 24, 64, d: true, z: true, init: true, softplus: true, bias: true);
        using var tiles = OpTuning.Override(Device, t => t with { ScanTile = tile });
        Check(c, SsdPath.Tiled, true, seed, $"tile {tile} seed {seed}");
    }

    /// <summary>dB/dC tiles the default takes only on other devices: narrow row, d_state and source tiles, head splits.</summary>
    [Theory]
    [InlineData("16,16,16,16,1")]
    [InlineData("32,32,32,16,2")]
    [InlineData("64,48,16,16,4")]
    public void ForcedDbcTilesMatch(string tile)
    {
        var seed = TestMath.NewSeed();
        var c = SsdCases.Make(new Random(seed), 1, 90, 8, 20, 2, 40, 64, d: true, z: true, init: true, softplus: true, bias: true);
        using var tiles = OpTuning.Override(Device, t => t with { DbcTile = tile });
        Check(c, SsdPath.Tiled, true, seed, $"dbc tile {tile} seed {seed}");
    }

    /// <summary>
    /// The dB/dC kernel walks its d_state tile in PK slices for C . B: a PK that does not divide BN read shared memory
    /// past the tile that nothing wrote (stale, NaN now and then on lavapipe, where the chosen 48-wide tile for
    /// d_state 40 took slices of 32). Every default tile takes whole slices, and a forced one that does not is refused.
    /// </summary>
    [Fact]
    public void DbcTilesWalkTheirDStateTileInWholeSlices()
    {
        foreach (var n in new[] { 8, 13, 16, 24, 40, 48, 64, 80, 96, 112, 128, 160, 256 })
        {
            foreach (var q in new[] { 16, 48, 64, 256 })
            {
                var t = SsdBackwardTiles.Choose(Device.Capabilities, new SsdShape(1, 64, 4, 16, 1, n, q));
                Assert.True(t.BN % t.PK == 0 && t.PK <= t.BK, $"d_state {n} chunk {q}: {t}");
            }
        }

        var e = Assert.Throws<ArgumentException>(() => SsdBackwardTiles.Choose(Device.Capabilities, new SsdShape(1, 64, 4, 16, 1, 40, 64), dbcTile: "32,48,32,32,1"));
        Assert.Contains("PK <= BK and dividing BN", e.Message);
    }

    [Theory]
    [InlineData(SsdPath.Tiled)]
    [InlineData(SsdPath.Recurrent)]
    public void BatchesLargerThanOneBindingAreSplit(SsdPath path)
    {
        var seed = TestMath.NewSeed();
        var c = SsdCases.Make(new Random(seed), 9, 45, 3, 8, 1, 8, 16, d: true, z: true, init: true, softplus: true, bias: true);
        OpTuning.Set(Device, OpTuning.Of(Device) with { MaxBindingBytes = 5 * 4320 });
        try
        {
            Check(c, path, true, seed, $"batch pieces seed {seed}");
        }
        finally
        {
            OpTuning.Set(Device, OpTuning.Of(Device) with { MaxBindingBytes = null });
        }
    }

    [Theory]
    [InlineData(SsdPath.Tiled)]
    [InlineData(SsdPath.Recurrent)]
    public void GradientsAreDeterministic(SsdPath path)
    {
        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        var c = SsdCases.Make(rng, 2, 70, 8, 16, 2, 16, 32, d: true, z: true, bias: true, softplus: true, init: true);
        var (dy, df) = Upstream(rng, c, true);
        var first = RunBackward(Device, c, path, Precision.Fp32, dy, df);
        var second = RunBackward(Device, c, path, Precision.Fp32, dy, df);
        foreach (var (name, values) in first)
        {
            Assert.True(values.AsSpan().SequenceEqual(second[name]), $"grad_{name} differs between two identical runs (seed {seed})");
        }
    }

    /// <summary>The reference itself: its gradients against central differences of its forward, every element.</summary>
    [Theory]
    [InlineData(true)]
    [InlineData(false)]
    public void ReferenceGradientsMatchFiniteDifferences(bool dPerHeadDim)
    {
        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        var c = SsdCases.Make(rng, 2, 7, 4, 3, 2, 4, 16, d: true, dPerP: dPerHeadDim, z: true, bias: true, init: true, softplus: true, dtMin: 0.02f, dtMax: 1.5f);
        var (dyF, dfF) = Upstream(rng, c, true);
        var (dy, dFinal) = (Widen(dyF), Widen(dfF!));
        var v = c.ToFloat64();
        var analytic = SsdReferenceBackward.Gradients(c, v, dy, dFinal);

        FiniteDifferences.Check(v, analytic, () => FiniteDifferences.Loss(SsdReference.Forward(c, v), dy, dFinal), $"seed {seed}");
    }

    [Fact]
    public void BadUpstreamShapesAndMismatchedSavedStateAreRejected()
    {
        var c = SsdCases.Make(new Random(1), 1, 20, 2, 8, 1, 8, 16, z: true);
        using var inputs = new SsdDeviceInputs(Device, c);
        using var saved = inputs.Forward();
        using var dyBad = Tensor.Empty(Device, "dy", 1, 21, 2, 8);
        var e = Assert.Throws<ArgumentException>(() => SsdOp.Backward(dyBad, saved));
        Assert.Equal("dy", e.ParamName);
        Assert.Contains("(1, 20, 2, 8)", e.Message);
        Assert.Contains("(1, 21, 2, 8)", e.Message);

        using var dy = Tensor.Empty(Device, "dy", 1, 20, 2, 8);
        using var dFinalBad = Tensor.Empty(Device, "dfinal_states", 1, 2, 8, 9);
        e = Assert.Throws<ArgumentException>(() => SsdOp.Backward(dy, saved, dFinalBad));
        Assert.Equal("dfinal_states", e.ParamName);

        // The backward takes the forward's inputs and options from what it returned: they cannot disagree.
        Poison.Fill(dy);
        using var ungated = SsdOp.Forward(inputs.X, inputs.Dt, inputs.A, inputs.B, inputs.C, inputs.Options with { Z = null });
        using var grads = SsdOp.Backward(dy, ungated);
        Assert.Null(grads.Dz);
        Assert.NotNull(saved.Inputs);
        Assert.Same(inputs.X, saved.Inputs.X);
    }
}
