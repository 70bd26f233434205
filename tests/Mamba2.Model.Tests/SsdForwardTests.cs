using Mamba2.Model.Ops;
using Mamba2.Model.Ops.Ssd;
using Mamba2.Model.Tensors;
using Mamba2.Model.Tests.Reference;
using Mamba2.Tests;
using Mamba2.Vulkan;
using Xunit;

namespace Mamba2.Model.Tests;

public class SsdForwardTests(GpuFixture gpu)
{
    private GpuDevice Device => gpu.Device;

    private void Check(SsdCase c, SsdPath path, string what) => Verify(Device, c, path, what, Precision.Fp32);

    /// <summary>
    /// The forward on the device (every output and intermediate poisoned first) against the float64 recurrence, at
    /// <paramref name="precision"/>'s tolerance (the tensor-core tests share it).
    /// </summary>
    internal static void Verify(GpuDevice device, SsdCase c, SsdPath path, string what, Precision precision)
    {
        what = $"{what} ({path})";
        var tolerance = precision.Tolerance();
        using var inputs = new SsdDeviceInputs(device, c, path, precision);
        using var s = device.BeginStream();
        using var result = inputs.Forward(s);
        // Poison every output and intermediate: anything a kernel fails to write shows up as NaN.
        Poison.Fill(result.Y, result.FinalStates, result.DtOut, result.DACumsum, result.DACumsumLo, result.ChunkStates, result.YBeforeGate);

        s.Submit();
        var (yRef, finalRef) = SsdReference.Forward(c);
        TestMath.AssertClose(result.Y.ToArray(), yRef, tolerance, $"{what}: y");
        TestMath.AssertClose(result.FinalStates.ToArray(), finalRef, tolerance, $"{what}: final_states");
        Assert.Equal(c.Z is null, result.YBeforeGate is null);
        if (result.YBeforeGate is not null)
        {
            TestMath.AssertClose(result.YBeforeGate.ToArray(), SsdReference.Forward(c with { Z = null }).Y, tolerance, $"{what}: y before the gate");
        }
    }

    /// <summary>Both paths: the tiled one (GPUs) and the recurrent one (CPU drivers).</summary>
    public static readonly SsdPath[] Paths = [SsdPath.Tiled, SsdPath.Recurrent];

    public static TheoryData<string, SsdPath> Cases()
    {
        var data = new TheoryData<string, SsdPath>();
        foreach (var name in new[] { "all-options", "plain", "shorter-than-chunk", "odd-chunk", "one-past-chunk", "wide", "many-groups", "head-blocks", "clamped-no-softplus", "awkward", "state-blocks" })
        {
            foreach (var path in Paths)
            {
                data.Add(name, path);
            }
        }

        return data;
    }

    /// <summary>The forward cases by name (the tensor-core tests reuse them).</summary>
    public static SsdCase MakeCase(string name, Random rng) => name switch
    {
        "all-options" => SsdCases.Make(rng, 2, 77, 4, 24, 2, 40, 32, d: true, dPerP: true, z: true, bias: true, init: true, softplus: true, dtMin: 0.05f, dtMax: 0.6f),
        "plain" => SsdCases.Make(rng, 1, 300, 3, 17, 1, 16, 64, d: true),
        "shorter-than-chunk" => SsdCases.Make(rng, 2, 5, 2, 8, 1, 8, 64, z: true, init: true),
        "odd-chunk" => SsdCases.Make(rng, 1, 100, 2, 33, 1, 20, 48, d: true, softplus: true, bias: true),
        "one-past-chunk" => SsdCases.Make(rng, 1, 257, 2, 16, 2, 16, 256, init: true),
        "wide" => SsdCases.Make(rng, 1, 40, 2, 128, 1, 256, 32, d: true, z: true),
        "many-groups" => SsdCases.Make(rng, 3, 50, 6, 16, 3, 24, 16, d: true, dPerP: true, softplus: true, dtMax: 0.2f),
        "head-blocks" => SsdCases.Make(rng, 1, 130, 8, 32, 2, 32, 64, d: true, z: true, init: true, softplus: true, bias: true),
        "clamped-no-softplus" => SsdCases.Make(rng, 1, 64, 2, 16, 1, 16, 32, dtMin: 0.1f, dtMax: 0.2f, negativeDt: true),
        // Odd L not a multiple of the chunk, p and n neither powers of two nor multiples of 8, g > 1.
        "awkward" => SsdCases.Make(rng, 2, 45, 6, 7, 3, 13, 16, d: true, dPerP: true, z: true, bias: true, init: true, softplus: true),
        // p and n past one register block of the recurrent kernels (two of each, uneven).
        "state-blocks" => SsdCases.Make(rng, 1, 37, 2, 20, 1, 40, 16, d: true, z: true, init: true, softplus: true),
        _ => throw new ArgumentException(name),
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void MatchesTheSequentialRecurrence(string name, SsdPath path)
    {
        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        var c = MakeCase(name, rng);
        Check(c, path, $"{name} seed {seed}");
    }

    /// <summary>Tiles the default choice only takes on some devices or shapes: several heads per workgroup, narrow tiles.</summary>
    [Theory]
    [InlineData("64,32,32,16,4")]
    [InlineData("32,32,16,8,2")]
    [InlineData("16,16,16,8,8")]
    public void ForcedTilesAndHeadBlocksMatch(string tile)
    {
        var seed = TestMath.NewSeed();
        var c = SsdCases.Make(new Random(seed), 2, 130, 8, 32, 1, 40, 64, d: true, z: true, init: true, softplus: true, bias: true);
        using var tiles = OpTuning.Override(Device, t => t with { ScanTile = tile });
        Check(c, SsdPath.Tiled, $"tile {tile} seed {seed}");
    }

    [Theory]
    [InlineData(SsdPath.Tiled)]
    [InlineData(SsdPath.Recurrent)]
    public void BatchesLargerThanOneBindingAreSplitAtAlignedOffsets(SsdPath path)
    {
        var seed = TestMath.NewSeed();
        // x holds 4320 bytes per batch element, dt 540 (so aligned slices start every 4 elements on a 16-byte
        // alignment): a 21600-byte binding limit gives pieces of 4, 4 and 1.
        var c = SsdCases.Make(new Random(seed), 9, 45, 3, 8, 1, 8, 16, d: true, z: true, init: true, softplus: true);
        OpTuning.Set(Device, OpTuning.Of(Device) with { MaxBindingBytes = 5 * 4320 });
        try
        {
            Check(c, path, $"batch pieces seed {seed}");
            OpTuning.Set(Device, OpTuning.Of(Device) with { MaxBindingBytes = 4320 });
            using var x = Tensor.FromArray(Device, "x", c.X, c.Batch, c.SeqLen, c.Heads, c.HeadDim);
            using var dt = Tensor.FromArray(Device, "dt", c.Dt, c.Batch, c.SeqLen, c.Heads);
            using var a = Tensor.FromArray(Device, "A", c.A, c.Heads);
            using var bm = Tensor.FromArray(Device, "B", c.B, c.Batch, c.SeqLen, c.Groups, c.DState);
            var e = Assert.Throws<ArgumentException>(() => SsdOp.Forward(x, dt, a, bm, bm));
            Assert.Contains("maxStorageBufferRange", e.Message);
        }
        finally
        {
            OpTuning.Set(Device, OpTuning.Of(Device) with { MaxBindingBytes = null });
        }
    }

    [Theory]
    [InlineData(8.0, SsdPath.Tiled)]
    [InlineData(1e-4, SsdPath.Tiled)]
    [InlineData(8.0, SsdPath.Recurrent)]
    [InlineData(1e-4, SsdPath.Recurrent)]
    public void LongSequencesNeitherOverflowNorUnderflow(double decay, SsdPath path)
    {
        var seed = TestMath.NewSeed();
        var c = SsdCases.Make(new Random(seed), 1, 4096, 2, 8, 1, 8, 256, d: true, init: true, decay: decay);
        Check(c, path, $"L=4096 decay scale {decay} seed {seed}");
    }

    [Fact]
    public void BadShapesNameTheArgument()
    {
        using var x = Tensor.Empty(Device, "x", 2, 10, 4, 8);
        using var dt = Tensor.Empty(Device, "dt", 2, 10, 4);
        using var a = Tensor.Empty(Device, "A", 4);
        using var bm = Tensor.Empty(Device, "B", 2, 10, 3, 16);
        using var cm = Tensor.Empty(Device, "C", 2, 10, 3, 16);
        var e = Assert.Throws<ArgumentException>(() => SsdOp.Forward(x, dt, a, bm, cm));
        Assert.Contains("multiple of the number of groups", e.Message);

        using var b2 = Tensor.Empty(Device, "B", 2, 10, 2, 16);
        using var c2 = Tensor.Empty(Device, "C", 2, 10, 2, 16);
        using var dtBad = Tensor.Empty(Device, "dt", 2, 11, 4);
        e = Assert.Throws<ArgumentException>(() => SsdOp.Forward(x, dtBad, a, b2, c2));
        Assert.Equal("dt", e.ParamName);
        Assert.Contains("(2, 10, 4)", e.Message);
        Assert.Contains("(2, 11, 4)", e.Message);

        using var dBad = Tensor.Empty(Device, "D", 4, 7);
        e = Assert.Throws<ArgumentException>(() => SsdOp.Forward(x, dt, a, b2, c2, new SsdOptions { D = dBad }));
        Assert.Equal("D", e.ParamName);
        Assert.Contains("(4) or (4, 8)", e.Message);

        using var init = Tensor.Empty(Device, "initial_states", 2, 4, 8, 15);
        e = Assert.Throws<ArgumentException>(() => SsdOp.Forward(x, dt, a, b2, c2, new SsdOptions { InitialStates = init }));
        Assert.Equal("initial_states", e.ParamName);

        Assert.Throws<ArgumentOutOfRangeException>(() => SsdOp.Forward(x, dt, a, b2, c2, new SsdOptions { ChunkSize = 512 }));
        e = Assert.Throws<ArgumentException>(() => SsdOp.Forward(x, dt, a, b2, c2, new SsdOptions { DtLimit = (1f, 0.5f) }));
        Assert.Equal("dt_limit", e.ParamName);
    }
}
