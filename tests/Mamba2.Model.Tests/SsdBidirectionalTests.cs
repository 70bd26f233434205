using Mamba2.Model.Ops;
using Mamba2.Model.Ops.Ssd;
using Mamba2.Model.Tensors;
using Mamba2.Model.Tests.Reference;
using Mamba2.Tests;
using Mamba2.Vulkan;
using Xunit;

namespace Mamba2.Model.Tests;

/// <summary>The bidirectional forms (sum: Bi-Mamba2, shift: Hydra) against the float64 naive composition.</summary>
public class SsdBidirectionalTests(GpuFixture gpu)
{
    private GpuDevice Device => gpu.Device;

    private static double[] Widen(float[] a) => Array.ConvertAll(a, v => (double)v);

    /// <summary>
    /// Every case in both forms, through the fused pass and through the naive composition, with the causal scans
    /// (the composed forward, every backward) on each path.
    /// </summary>
    public static TheoryData<string, SsdDirection, bool, SsdPath> Cases()
    {
        var data = new TheoryData<string, SsdDirection, bool, SsdPath>();
        foreach (var direction in new[] { SsdDirection.BidirectionalSum, SsdDirection.BidirectionalShift })
        {
            foreach (var name in new[] { "all-options", "plain", "per-token-D", "reverse-tensors", "one-chunk", "head-blocks" })
            {
                foreach (var path in SsdForwardTests.Paths)
                {
                    data.Add(name, direction, true, path);
                    data.Add(name, direction, false, path);
                }
            }
        }

        return data;
    }

    private static SsdCase MakeCase(string name, SsdDirection direction, Random rng) => name switch
    {
        // Odd L over several chunks, g > 1, D (h), z, bias, softplus with dt_limit clipping some steps.
        "all-options" => SsdCases.Bidirectional(rng, direction, 2, 77, 4, 12, 2, 16, 32, d: true, z: true, bias: true, softplus: true, dtMin: 0.05f, dtMax: 0.6f),
        "plain" => SsdCases.Bidirectional(rng, direction, 1, 100, 2, 16, 1, 16, 64, d: true, dPerP: true),
        "per-token-D" => SsdCases.Bidirectional(rng, direction, 2, 45, 3, 8, 1, 12, 16, d: true, dPerToken: true, z: true),
        "reverse-tensors" => SsdCases.Bidirectional(rng, direction, 1, 70, 4, 8, 2, 8, 32, d: true, dPerToken: true, bias: true, softplus: true, reverseTensors: true),
        "one-chunk" => SsdCases.Bidirectional(rng, direction, 2, 9, 2, 8, 1, 8, 64, d: true, z: true, reverseTensors: true),
        // 8 heads per group: the fused pass shares each C.B^T tile across a block of heads.
        "head-blocks" => SsdCases.Bidirectional(rng, direction, 1, 130, 8, 16, 1, 24, 64, d: true, z: true, bias: true, softplus: true),
        _ => throw new ArgumentException(name),
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void ForwardAndGradientsMatchTheNaiveComposition(string name, SsdDirection direction, bool fused, SsdPath path)
    {
        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        var c = MakeCase(name, direction, rng);
        var what = $"{name} {direction} {(fused ? "fused" : "composed")} ({path}) seed {seed}";
        var dy = TestMath.Uniform(rng, (long)c.Batch * c.SeqLen * c.Heads * c.HeadDim, -1, 1);
        var dFinal = TestMath.Uniform(rng, (long)c.Batch * c.Heads * c.HeadDim * c.DState, -1, 1);

        using var inputs = new SsdDeviceInputs(Device, c, path);
        using var dyT = Tensor.FromArray(Device, "dy", dy, c.Batch, c.SeqLen, c.Heads, c.HeadDim);
        using var dFinalT = Tensor.FromArray(Device, "dfinal_states", dFinal, c.Batch, c.Heads, c.HeadDim, c.DState);
        using var s = Device.BeginStream();
        var options = inputs.Options with { BidirectionalPath = fused ? SsdBidirectionalPath.Fused : SsdBidirectionalPath.Composed };
        using var saved = SsdOp.Forward(inputs.X, inputs.Dt, inputs.A, inputs.B, inputs.C, options, s);
        using var grads = SsdOp.Backward(dyT, saved, dFinalT, s);
        Poison.Fill(grads.Named().Select(n => n.Gradient).Append(saved.Y).Append(saved.FinalStates));

        s.Submit();
        var v = c.ToFloat64();
        var (y, final) = SsdBidirectionalReference.Forward(c, v);
        TestMath.AssertClose(saved.Y.ToArray(), y, 1e-5, $"{what}: y");
        TestMath.AssertClose(saved.FinalStates.ToArray(), final, 1e-5, $"{what}: final_states (forward scan)");
        var expected = SsdBidirectionalReference.Gradients(c, v, Widen(dy), Widen(dFinal));
        var actual = grads.Named().ToDictionary(g => g.Input, g => g.Gradient.ToArray());
        Assert.Equal(expected.Named().Select(e => e.Name), actual.Keys);
        foreach (var (input, reference) in expected.Named())
        {
            TestMath.AssertClose(actual[input], reference, expected.ErrorScale(input, reference), 1e-5, $"{what}: grad_{input}");
        }
    }

    /// <summary>The composed reference itself against central differences of its forward, every element of every input.</summary>
    [Theory]
    [InlineData(SsdDirection.BidirectionalSum, false)]
    [InlineData(SsdDirection.BidirectionalShift, true)]
    public void ReferenceGradientsMatchFiniteDifferences(SsdDirection direction, bool reverseTensors)
    {
        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        var c = SsdCases.Bidirectional(rng, direction, 2, 6, 2, 3, 1, 4, 16, d: true, dPerToken: reverseTensors, z: true, bias: true,
            softplus: true, reverseTensors: reverseTensors, dtMin: 0.02f, dtMax: 1.5f);
        var dy = Widen(TestMath.Uniform(rng, (long)c.Batch * c.SeqLen * c.Heads * c.HeadDim, -1, 1));
        var dFinal = Widen(TestMath.Uniform(rng, (long)c.Batch * c.Heads * c.HeadDim * c.DState, -1, 1));
        var v = c.ToFloat64();
        var analytic = SsdBidirectionalReference.Gradients(c, v, dy, dFinal);

        FiniteDifferences.Check(v, analytic, () => FiniteDifferences.Loss(SsdBidirectionalReference.Forward(c, v), dy, dFinal), $"{direction} seed {seed}");
    }

    /// <summary>Batches split into slices that fit a (shrunken) binding limit, in both implementations.</summary>
    [Theory]
    [InlineData(true, SsdPath.Tiled, true)]
    [InlineData(false, SsdPath.Tiled, true)]
    [InlineData(false, SsdPath.Recurrent, true)]
    [InlineData(true, SsdPath.Tiled, false)]   // the in-place backward, g read one step away
    public void BatchesLargerThanOneBindingAreSplit(bool fused, SsdPath path, bool reverseTensors)
    {
        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        // x holds 45 * 3 * 8 * 4 = 4320 bytes per batch element: a 5-element binding gives pieces of 4, 4 and 1.
        var c = SsdCases.Bidirectional(rng, SsdDirection.BidirectionalShift, 9, 45, 3, 8, 1, 8, 16, d: true, dPerToken: true, z: true,
            softplus: true, bias: true, reverseTensors: reverseTensors);
        var dy = TestMath.Uniform(rng, (long)c.Batch * c.SeqLen * c.Heads * c.HeadDim, -1, 1);
        using var inputs = new SsdDeviceInputs(Device, c, path);
        using var dyT = Tensor.FromArray(Device, "dy", dy, c.Batch, c.SeqLen, c.Heads, c.HeadDim);
        var options = inputs.Options with { BidirectionalPath = fused ? SsdBidirectionalPath.Fused : SsdBidirectionalPath.Composed };
        OpTuning.Set(Device, OpTuning.Of(Device) with { MaxBindingBytes = 5 * 4320 });
        try
        {
            using var saved = SsdOp.Forward(inputs.X, inputs.Dt, inputs.A, inputs.B, inputs.C, options);
            using var grads = SsdOp.Backward(dyT, saved);
            var v = c.ToFloat64();
            TestMath.AssertClose(saved.Y.ToArray(), SsdBidirectionalReference.Forward(c, v).Y, 1e-5, $"pieces y seed {seed}");
            var expected = SsdBidirectionalReference.Gradients(c, v, Widen(dy), null);
            foreach (var ((name, reference), (_, actual)) in expected.Named().Zip(grads.Named()))
            {
                TestMath.AssertClose(actual.ToArray(), reference, expected.ErrorScale(name, reference), 1e-5, $"pieces grad_{name} seed {seed}");
            }
        }
        finally
        {
            OpTuning.Set(Device, OpTuning.Of(Device) with { MaxBindingBytes = null });
        }
    }

    /// <summary>Peak extra device memory of one forward + backward (tiled path, fused where bidirectional), in bytes.</summary>
    private long PeakOfForwardAndBackward(SsdCase c, float[] dy)
    {
        using var inputs = new SsdDeviceInputs(Device, c, SsdPath.Tiled);
        using var dyT = Tensor.FromArray(Device, "dy", dy, c.Batch, c.SeqLen, c.Heads, c.HeadDim);
        var before = Device.Memory.AllocatedBytes;
        Device.Memory.ResetPeak();
        using (var s = Device.BeginStream())
        {
            var options = inputs.Options with { BidirectionalPath = SsdBidirectionalPath.Fused };
            using var saved = SsdOp.Forward(inputs.X, inputs.Dt, inputs.A, inputs.B, inputs.C, options, s);
            using var grads = SsdOp.Backward(dyT, saved, stream: s);
            s.Submit();
        }

        return (long)(Device.Memory.PeakAllocatedBytes - before);
    }

    /// <summary>
    /// The backward adds the reverse run's gradients into the forward run's and shares its scratch (the shift form
    /// reads g one step away in place): one forward + backward needs at most the causal op's plus what the reverse
    /// scan saves (its chunk states, final state, dt and dA cumsum), not a second set of gradients and scratch.
    /// </summary>
    [Theory]
    [InlineData(SsdDirection.BidirectionalSum)]
    [InlineData(SsdDirection.BidirectionalShift)]
    public void TrainingMemoryStaysNearTheCausalOps(SsdDirection direction)
    {
        var seed = TestMath.NewSeed();
        // 16 heads in a group: the causal backward keeps 8 dB/dC split copies, the bidirectional one 4.
        var c = SsdCases.Bidirectional(new Random(seed), direction, 1, 128, 16, 16, 1, 16, 64, d: true, bias: true, softplus: true);
        var dy = TestMath.Uniform(new Random(seed + 1), (long)c.Batch * c.SeqLen * c.Heads * c.HeadDim, -1, 1);
        var causal = PeakOfForwardAndBackward(c with { Direction = SsdDirection.Causal }, dy);
        var sum = PeakOfForwardAndBackward(c, dy);
        int nc = (c.SeqLen + c.Chunk - 1) / c.Chunk, state = c.Heads * c.HeadDim * c.DState;
        long reverseSaved = 4L * c.Batch * ((nc + 1) * state + 3 * c.Heads * nc * c.Chunk);
        Assert.True(sum <= causal + reverseSaved, $"{direction} {sum} bytes against causal {causal} + the reverse scan's {reverseSaved} (seed {seed})");
    }

    /// <summary>The in-place backward adds into its outputs: two calls on one forward must give the same bits.</summary>
    [Theory]
    [InlineData(SsdDirection.BidirectionalSum)]
    [InlineData(SsdDirection.BidirectionalShift)]
    public void InPlaceBackwardIsRepeatable(SsdDirection direction)
    {
        var seed = TestMath.NewSeed();
        var c = SsdCases.Bidirectional(new Random(seed), direction, 2, 70, 4, 16, 1, 16, 32, d: true, z: true, bias: true, softplus: true);
        var dy = TestMath.Uniform(new Random(seed + 1), (long)c.Batch * c.SeqLen * c.Heads * c.HeadDim, -1, 1);
        using var inputs = new SsdDeviceInputs(Device, c, SsdPath.Tiled);
        using var dyT = Tensor.FromArray(Device, "dy", dy, c.Batch, c.SeqLen, c.Heads, c.HeadDim);
        var options = inputs.Options with { BidirectionalPath = SsdBidirectionalPath.Fused };
        using var saved = SsdOp.Forward(inputs.X, inputs.Dt, inputs.A, inputs.B, inputs.C, options);
        using var first = SsdOp.Backward(dyT, saved);
        using var second = SsdOp.Backward(dyT, saved);
        foreach (var ((name, a), (_, b)) in first.Named().Zip(second.Named()))
        {
            Assert.True(a.ToArray().AsSpan().SequenceEqual(b.ToArray()), $"grad_{name} differs between two backwards of one forward (seed {seed})");
        }
    }

    [Fact]
    public void SumModeEqualsTheCausalOpOnEachDirection()
    {
        // Independent of the composed reference: y_sum = causal(x) + flip(causal(flip(x))) + D x, built from the op.
        var seed = TestMath.NewSeed();
        var c = SsdCases.Bidirectional(new Random(seed), SsdDirection.BidirectionalSum, 1, 50, 2, 8, 1, 8, 16, d: true);
        var causal = c with { Direction = SsdDirection.Causal, D = null };
        var flipped = causal with { X = Flip(c.X, c, c.Heads * c.HeadDim), Dt = Flip(c.Dt, c, c.Heads), B = Flip(c.B, c, c.DState), C = Flip(c.C, c, c.DState) };
        using var bi = new SsdDeviceInputs(Device, c);
        using var fw = new SsdDeviceInputs(Device, causal);
        using var rv = new SsdDeviceInputs(Device, flipped);
        using var yBi = bi.Forward();
        using var yF = fw.Forward();
        using var yR = rv.Forward();
        var f = yF.Y.ToArray();
        var r = Flip(yR.Y.ToArray(), c, c.Heads * c.HeadDim);
        var expected = new double[f.Length];
        for (var i = 0; i < f.Length; i++)
        {
            expected[i] = f[i] + r[i] + c.D![i / c.HeadDim % c.Heads] * c.X[i];
        }

        TestMath.AssertClose(yBi.Y.ToArray(), expected, 1e-6, $"sum mode vs two causal calls, seed {seed}");
    }

    private static float[] Flip(float[] a, SsdCase c, int row)
    {
        var output = new float[a.Length];
        for (var b = 0; b < c.Batch; b++)
        {
            for (var t = 0; t < c.SeqLen; t++)
            {
                Array.Copy(a, ((b * c.SeqLen) + t) * row, output, ((b * c.SeqLen) + c.SeqLen - 1 - t) * row, row);
            }
        }

        return output;
    }

    [Fact]
    public void BidirectionalArgumentsAreChecked()
    {
        var c = SsdCases.Make(new Random(3), 1, 20, 2, 8, 1, 8, 16, init: true);
        using var inputs = new SsdDeviceInputs(Device, c);
        var bi = inputs.Options with { Direction = SsdDirection.BidirectionalSum };
        var e = Assert.Throws<ArgumentException>(() => SsdOp.Forward(inputs.X, inputs.Dt, inputs.A, inputs.B, inputs.C, bi));
        Assert.Equal("initial_states", e.ParamName);

        using var dtRev = Tensor.Empty(Device, "dt_rev", 1, 20, 2);
        e = Assert.Throws<ArgumentException>(() => SsdOp.Forward(inputs.X, inputs.Dt, inputs.A, inputs.B, inputs.C, inputs.Options with { DtRev = dtRev }));
        Assert.Equal("dt_rev", e.ParamName);

        using var bRevBad = Tensor.Empty(Device, "B_rev", 1, 20, 1, 9);
        e = Assert.Throws<ArgumentException>(() => SsdOp.Forward(inputs.X, inputs.Dt, inputs.A, inputs.B, inputs.C,
            bi with { InitialStates = null, BRev = bRevBad }));
        Assert.Equal("B_rev", e.ParamName);
        Assert.Contains("(1, 20, 1, 8)", e.Message);

        using var dToken = Tensor.Empty(Device, "D", 1, 20, 2);
        e = Assert.Throws<ArgumentException>(() => SsdOp.Forward(inputs.X, inputs.Dt, inputs.A, inputs.B, inputs.C, inputs.Options with { D = dToken }));
        Assert.Equal("D", e.ParamName);

        using var causal = SsdOp.Forward(inputs.X, inputs.Dt, inputs.A, inputs.B, inputs.C, inputs.Options with { InitialStates = null });
        Assert.Equal(SsdDirection.Causal, causal.Inputs!.Options.Direction);   // its backward is the causal one
    }
}
