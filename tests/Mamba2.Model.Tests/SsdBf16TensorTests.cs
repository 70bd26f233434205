using Mamba2.Model.IO;
using Mamba2.Model.Ops;
using Mamba2.Model.Ops.Ssd;
using Mamba2.Model.Tensors;
using Mamba2.Model.Tests.Reference;
using Mamba2.Tests;
using Mamba2.Vulkan;
using Xunit;

namespace Mamba2.Model.Tests;

/// <summary>
/// The SSD on bf16 x, B, C and z (<see cref="TensorDType.BF16"/>, precision bf16): y and y before the gate come back
/// as bf16, the gradients of the bf16 inputs too; everything is compared with the float64 recurrence on the same
/// bf16-rounded inputs (and upstream gradient) at bf16's tolerance. Where the device lacks the tensor-core kernels,
/// SsdTensorCoreTests holds the refusal to its reason; these return.
/// </summary>
public class SsdBf16TensorTests(GpuFixture gpu)
{
    private GpuDevice Device => gpu.Device;

    private bool Unavailable => SsdOp.WhyNot(Device, Precision.Bf16) is not null || !Device.Capabilities.Storage16Bit;

    /// <summary>The case with x, B, C and z rounded to bf16 (what the device tensors hold, so what the reference takes).</summary>
    internal static SsdCase Rounded(SsdCase c) => c with { X = Round(c.X), B = Round(c.B), C = Round(c.C), Z = c.Z is null ? null : Round(c.Z) };

    /// <summary>Each value rounded to the nearest bf16 (ties to even), as an fp32.</summary>
    internal static float[] Round(float[] a) => Array.ConvertAll(a, v => BFloat16Bits.ToSingle(BFloat16Bits.FromSingle(v)));

    private static SsdCase MakeCase(string name, Random rng) => name switch
    {
        // Rows of x, B and C on 8-byte boundaries and tiles inside memory: the kernels' strided 4-element reads.
        "strided" => SsdCases.Make(rng, 2, 300, 3, 64, 1, 64, 128, d: true, z: true, bias: true, init: true, softplus: true),
        "long-strong-decay" => SsdCases.Make(rng, 1, 2048, 2, 8, 1, 8, 256, d: true, init: true, decay: 8.0),
        _ => SsdForwardTests.MakeCase(name, rng),
    };

    [Theory]
    [InlineData("all-options")]
    [InlineData("awkward")]
    [InlineData("odd-chunk")]
    [InlineData("shorter-than-chunk")]
    [InlineData("many-groups")]
    [InlineData("strided")]
    [InlineData("long-strong-decay")]
    public void ForwardOnBf16TensorsMatchesTheRecurrence(string name)
    {
        if (Unavailable)
        {
            return;
        }

        var seed = TestMath.NewSeed();
        var c = Rounded(MakeCase(name, new Random(seed)));
        var what = $"{name} bf16 tensors seed {seed}";
        using var inputs = new SsdDeviceInputs(Device, c, SsdPath.Auto, Precision.Bf16, TensorDType.BF16);
        using var s = Device.BeginStream();
        using var result = inputs.Forward(s);
        Assert.Equal(TensorDType.BF16, result.Y.DType);
        Assert.Equal(TensorDType.F32, result.FinalStates.DType);
        Poison.Fill(result.Y, result.FinalStates, result.DtOut, result.DACumsum, result.DACumsumLo, result.ChunkStates, result.YBeforeGate);
        s.Submit();

        var tolerance = Precision.Bf16.Tolerance();
        var (yRef, finalRef) = SsdReference.Forward(c);
        TestMath.AssertClose(result.Y.ToArray(), yRef, tolerance, $"{what}: y");
        TestMath.AssertClose(result.FinalStates.ToArray(), finalRef, tolerance, $"{what}: final_states");
        Assert.Equal(c.Z is null, result.YBeforeGate is null);
        if (result.YBeforeGate is not null)
        {
            Assert.Equal(TensorDType.BF16, result.YBeforeGate.DType);
            TestMath.AssertClose(result.YBeforeGate.ToArray(), SsdReference.Forward(c with { Z = null }).Y, tolerance, $"{what}: y before the gate");
        }
    }

    [Theory]
    [InlineData("all-options", true)]
    [InlineData("awkward", true)]
    [InlineData("awkward", false)]
    [InlineData("strided", true)]
    public void BackwardOnBf16TensorsMatchesTheAdjoint(string name, bool dyBf16)
    {
        if (Unavailable)
        {
            return;
        }

        var seed = TestMath.NewSeed();
        var c = Rounded(name == "strided" ? MakeCase(name, new Random(seed)) : SsdBackwardTests.MakeCase(name, new Random(seed)).Case);
        var what = $"{name} bf16 tensors, dy {(dyBf16 ? "bf16" : "fp32")}, seed {seed}";
        var rng = new Random(seed + 1);
        var dy = TestMath.Uniform(rng, (long)c.Batch * c.SeqLen * c.Heads * c.HeadDim, -1, 1);
        if (dyBf16)
        {
            dy = Round(dy);
        }

        var dFinal = TestMath.Uniform(rng, (long)c.Batch * c.Heads * c.HeadDim * c.DState, -1, 1);
        using var inputs = new SsdDeviceInputs(Device, c, SsdPath.Auto, Precision.Bf16, TensorDType.BF16);
        using var dyT = Tensor.FromArray(Device, "dy", dy, dyBf16 ? TensorDType.BF16 : TensorDType.F32, c.Batch, c.SeqLen, c.Heads, c.HeadDim);
        using var dFinalT = Tensor.FromArray(Device, "dfinal_states", dFinal, c.Batch, c.Heads, c.HeadDim, c.DState);
        using var saved = inputs.Forward();
        using var s = Device.BeginStream();
        using var grads = SsdOp.Backward(dyT, saved, dFinalT, s);
        Poison.Fill(grads.Named().Select(g => g.Gradient));
        s.Submit();

        // Gradients in their inputs' types, as PyTorch returns them.
        var bf16Inputs = new HashSet<string> { "x", "B", "C", "z" };
        foreach (var (input, gradient) in grads.Named())
        {
            Assert.True((bf16Inputs.Contains(input) ? TensorDType.BF16 : TensorDType.F32) == gradient.DType, $"{what}: grad_{input} is {gradient.DType}");
        }

        var expected = SsdReferenceBackward.Gradients(c, Array.ConvertAll(dy, v => (double)v), Array.ConvertAll(dFinal, v => (double)v));
        var actual = grads.Named().ToDictionary(g => g.Input, g => g.Gradient.ToArray());
        Assert.Equal(expected.Named().Select(e => e.Name), actual.Keys);
        var failures = expected.Named()
            .Select(e => Record.Exception(() => TestMath.AssertClose(actual[e.Name], e.Data, expected.ErrorScale(e.Name, e.Data),
                Precision.Bf16.Tolerance(), $"{what}: grad_{e.Name}"))?.Message)
            .OfType<string>().ToList();
        Assert.True(failures.Count == 0, string.Join(Environment.NewLine, failures));
    }

    /// <summary>
    /// Both bidirectional forms on bf16 tensors, through the fused pass and through two causal runs combined, forward
    /// and backward, against the float64 composition on the same bf16-rounded inputs and upstream gradient.
    /// </summary>
    [Theory]
    [InlineData("sum-gated", SsdDirection.BidirectionalSum, true)]
    [InlineData("sum-gated", SsdDirection.BidirectionalSum, false)]
    [InlineData("shift-D-per-p", SsdDirection.BidirectionalShift, true)]
    [InlineData("shift-D-per-p", SsdDirection.BidirectionalShift, false)]
    [InlineData("per-token-D", SsdDirection.BidirectionalSum, false)]
    public void BidirectionalOnBf16TensorsMatchesTheComposition(string name, SsdDirection direction, bool fused)
    {
        if (Unavailable)
        {
            return;
        }

        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        var c = Rounded(name switch
        {
            "sum-gated" => SsdCases.Bidirectional(rng, direction, 2, 77, 4, 12, 2, 16, 32, d: true, z: true, bias: true, softplus: true, dtMin: 0.05f, dtMax: 0.6f),
            "shift-D-per-p" => SsdCases.Bidirectional(rng, direction, 1, 100, 2, 16, 1, 16, 64, d: true, dPerP: true, z: true),
            _ => SsdCases.Bidirectional(rng, direction, 2, 45, 3, 8, 1, 12, 16, d: true, dPerToken: true, z: true),
        });
        var what = $"{name} {direction} {(fused ? "fused" : "composed")} bf16 tensors seed {seed}";
        var dy = Round(TestMath.Uniform(rng, (long)c.Batch * c.SeqLen * c.Heads * c.HeadDim, -1, 1));
        var dFinal = TestMath.Uniform(rng, (long)c.Batch * c.Heads * c.HeadDim * c.DState, -1, 1);
        using var inputs = new SsdDeviceInputs(Device, c, SsdPath.Auto, Precision.Bf16, TensorDType.BF16);
        using var dyT = Tensor.FromArray(Device, "dy", dy, TensorDType.BF16, c.Batch, c.SeqLen, c.Heads, c.HeadDim);
        using var dFinalT = Tensor.FromArray(Device, "dfinal_states", dFinal, c.Batch, c.Heads, c.HeadDim, c.DState);
        using var s = Device.BeginStream();
        var options = inputs.Options with { BidirectionalPath = fused ? SsdBidirectionalPath.Fused : SsdBidirectionalPath.Composed };
        using var saved = SsdOp.Forward(inputs.X, inputs.Dt, inputs.A, inputs.B, inputs.C, options, s);
        using var grads = SsdOp.Backward(dyT, saved, dFinalT, s);
        Assert.Equal(TensorDType.BF16, saved.Y.DType);
        Poison.Fill(grads.Named().Select(n => n.Gradient).Append(saved.Y).Append(saved.FinalStates));
        s.Submit();

        var tolerance = Precision.Bf16.Tolerance();
        var v = c.ToFloat64();
        var (y, final) = SsdBidirectionalReference.Forward(c, v);
        TestMath.AssertClose(saved.Y.ToArray(), y, tolerance, $"{what}: y");
        TestMath.AssertClose(saved.FinalStates.ToArray(), final, tolerance, $"{what}: final_states (forward scan)");
        var expected = SsdBidirectionalReference.Gradients(c, v, Array.ConvertAll(dy, e => (double)e), Array.ConvertAll(dFinal, e => (double)e));
        var bf16Inputs = new HashSet<string> { "x", "B", "C", "z" };
        var failures = new List<string>();
        foreach (var (input, reference) in expected.Named())
        {
            var gradient = grads.Named().Single(g => g.Input == input).Gradient;
            Assert.True((bf16Inputs.Contains(input) ? TensorDType.BF16 : TensorDType.F32) == gradient.DType, $"{what}: grad_{input} is {gradient.DType}");
            if (Record.Exception(() => TestMath.AssertClose(gradient.ToArray(), reference, expected.ErrorScale(input, reference), tolerance, $"{what}: grad_{input}")) is { } e)
            {
                failures.Add(e.Message);
            }
        }

        Assert.True(failures.Count == 0, string.Join(Environment.NewLine, failures));
    }

    /// <summary>
    /// A batch split into several bindings (forced small): each piece's bf16 slices start on a bindable offset, and the
    /// output is the same as in one piece, bit for bit, forward and backward. x's 20 elements a batch element are 40
    /// bytes in bf16: where offsets align to 16 bytes only pieces of an even count start on one, which no fp32 tensor
    /// here asks for (C.B^T's 256 floats a batch element, the largest binding, would allow pieces of 3).
    /// </summary>
    [Fact]
    public void BatchPiecesOfBf16TensorsGiveTheSameBits()
    {
        if (Unavailable)
        {
            return;
        }

        var seed = TestMath.NewSeed();
        var c = Rounded(SsdCases.Make(new Random(seed), 6, 4, 1, 5, 1, 8, 16, d: true, z: true, init: true, softplus: true));
        using var inputs = new SsdDeviceInputs(Device, c, SsdPath.Auto, Precision.Bf16, TensorDType.BF16);
        using var whole = inputs.Forward();
        using (OpTuning.Override(Device, t => t with { MaxBindingBytes = 3 * 16 * 16 * sizeof(float) }))
        {
            using var split = inputs.Forward();
            Assert.Equal(whole.Y.ToArray(), split.Y.ToArray());
            Assert.Equal(whole.YBeforeGate!.ToArray(), split.YBeforeGate!.ToArray());
            Assert.Equal(whole.FinalStates.ToArray(), split.FinalStates.ToArray());
        }

        TestMath.AssertClose(whole.Y.ToArray(), SsdReference.Forward(c).Y, Precision.Bf16.Tolerance(), $"seed {seed}: y");

        // The backward's largest binding is dcb's two partials, 512 floats a batch element: a limit of 5 of them allows
        // pieces of 5, which the bf16 slices cut to 4 where offsets align to 16 bytes (5 x 40 would not; lavapipe's
        // smaller alignment takes 5: BatchPiecesAlignBf16SlicesToo checks that arithmetic).
        using var dy = Tensor.FromArray(Device, "dy", Round(TestMath.Uniform(new Random(seed + 1), (long)c.Batch * c.SeqLen * c.Heads * c.HeadDim, -1, 1)),
            TensorDType.BF16, c.Batch, c.SeqLen, c.Heads, c.HeadDim);
        using var wholeGrads = SsdOp.Backward(dy, whole);
        using (OpTuning.Override(Device, t => t with { MaxBindingBytes = 5 * 2 * 16 * 16 * sizeof(float) }))
        {
            using var splitGrads = SsdOp.Backward(dy, whole);
            foreach (var ((name, a), (_, g)) in wholeGrads.Named().Zip(splitGrads.Named()))
            {
                Assert.True(a.ToArray().SequenceEqual(g.ToArray()), $"seed {seed}: grad_{name} differs between one piece and several");
            }
        }
    }

    /// <summary>
    /// Batch pieces start every slice on the device's offset alignment, bf16 slices included: 20 elements a batch
    /// element are 80 bytes in fp32 (any piece start is 16-byte aligned) but 40 in bf16 (only even ones are).
    /// </summary>
    [Fact]
    public void BatchPiecesAlignBf16SlicesToo()
    {
        var caps = Device.Capabilities with { MinStorageBufferOffsetAlignment = 16, MaxStorageBufferRange = 1UL << 30 };
        Assert.Equal([(0L, 5L), (5L, 1L)], Shaders.BatchPieces(caps, Device.Name, "test", 6, [20], maxRangeBytes: 400));
        Assert.Equal([(0L, 4L), (4L, 2L)], Shaders.BatchPieces(caps, Device.Name, "test", 6, [20], maxRangeBytes: 400, perBatchHalves: [20]));
        var e = Assert.Throws<ArgumentException>(() => Shaders.BatchPieces(caps, Device.Name, "test", 6, [20], maxRangeBytes: 100, perBatchHalves: [20]));
        Assert.Contains("2 elements for aligned slices", e.Message);
    }

    [Fact]
    public void MixedOrMisplacedTypesAreRefusedNamingTheTensor()
    {
        if (!Device.Capabilities.Storage16Bit)
        {
            return;
        }

        var c = SsdForwardTests.MakeCase("all-options", new Random(1));
        using var f32 = new SsdDeviceInputs(Device, c, SsdPath.Auto, Precision.Bf16);
        using var b16 = new SsdDeviceInputs(Device, c, SsdPath.Auto, Precision.Bf16, TensorDType.BF16);
        using var dtBf16 = Cast.To(f32.Dt, TensorDType.BF16);

        void Refused(string argument, string words, Action run)
        {
            var e = Assert.Throws<ArgumentException>(run);
            Assert.Equal(argument, e.ParamName);
            Assert.Contains(words, e.Message);
        }

        Refused("B", "B is float32 but x is bfloat16", () => SsdOp.Forward(b16.X, b16.Dt, b16.A, f32.B, b16.C, b16.Options).Dispose());
        Refused("z", "z is float32 but x is bfloat16", () => SsdOp.Forward(b16.X, b16.Dt, b16.A, b16.B, b16.C, b16.Options with { Z = f32.Options.Z }).Dispose());
        Refused("dt", "dt must be float32", () => SsdOp.Forward(f32.X, dtBf16, f32.A, f32.B, f32.C, f32.Options).Dispose());
        Refused("precision", "in precision bf16 only, not fp32-fast", () => SsdOp.Forward(b16.X, b16.Dt, b16.A, b16.B, b16.C, b16.Options with { Precision = Precision.Fp32Fast }).Dispose());
        Refused("precision", "in precision bf16 only, not fp32", () => SsdOp.Forward(b16.X, b16.Dt, b16.A, b16.B, b16.C, b16.Options with { Precision = Precision.Fp32 }).Dispose());
        Refused("x", "own dt_rev, B_rev or C_rev", () => SsdOp.Forward(b16.X, b16.Dt, b16.A, b16.B, b16.C,
            b16.Options with { Direction = SsdDirection.BidirectionalSum, InitialStates = null, DtRev = f32.Dt }).Dispose());
        // An fp32-only op given a bf16 tensor stops before recording anything.
        using var aBf16 = Cast.To(f32.A, TensorDType.BF16, name: "A_log");
        using var a = Tensor.Empty(Device, "A", c.Heads);
        Refused("A_log", "takes float32 tensors only", () => Unary.NegExp(aBf16, a));
    }

    /// <summary>fp32 to bf16 rounds to nearest even (ties, NaN, infinities, the largest values), and bf16 to fp32 is exact.</summary>
    [Fact]
    public void CastRoundsToNearestEvenAndWidensExactly()
    {
        if (!Device.Capabilities.Storage16Bit)
        {
            var e = Assert.Throws<MissingFeatureException>(() => Cast.To(Tensor.Empty(Device, "x", 3), TensorDType.BF16).Dispose());
            Assert.Contains("16-bit storage", e.Message);
            return;
        }

        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        var values = new List<float>
        {
            0f, -0f, 1f, -1f, float.PositiveInfinity, float.NegativeInfinity, float.NaN, float.MaxValue, float.Epsilon,
            BitConverter.UInt32BitsToSingle(0x3F808000),   // a tie, to the even (lower) neighbour
            BitConverter.UInt32BitsToSingle(0x3F818000),   // a tie, to the even (upper) neighbour
            BitConverter.UInt32BitsToSingle(0x3F808001),   // just past a tie
            BitConverter.UInt32BitsToSingle(0x7F7FFFFF),   // rounds to infinity
            BitConverter.UInt32BitsToSingle(0x7F800001),   // a NaN whose payload is in the low half only
        };
        while (values.Count < 1001)   // an odd count: the last element shares its word with nothing
        {
            values.Add(BitConverter.Int32BitsToSingle(rng.Next()) * (rng.Next(2) == 0 ? 1 : -1));
        }

        var data = values.ToArray();
        using var x = Tensor.FromArray(Device, "x", data, data.Length);
        using var narrow = Cast.To(x, TensorDType.BF16);
        using var back = Cast.To(narrow, TensorDType.F32);
        Assert.Equal(TensorDType.BF16, narrow.DType);
        Assert.Equal((ulong)data.Length * 2, narrow.SizeBytes);
        var got = back.ToArray();
        for (var i = 0; i < data.Length; i++)
        {
            var want = BFloat16Bits.ToSingle(BFloat16Bits.FromSingle(data[i]));
            Assert.True(float.IsNaN(want) ? float.IsNaN(got[i]) : BitConverter.SingleToUInt32Bits(want) == BitConverter.SingleToUInt32Bits(got[i]),
                $"seed {seed}: element {i} ({data[i]:R}, bits {BitConverter.SingleToUInt32Bits(data[i]):X8}) gave {got[i]:R}, not {want:R}");
        }

        // The host's own conversion agrees with the device's (FromArray rounds, ToArray widens).
        using var up = Tensor.FromArray(Device, "up", data, TensorDType.BF16, data.Length);
        Assert.Equal(narrow.ToArray().Select(Bits), up.ToArray().Select(Bits));

        static uint Bits(float v) => float.IsNaN(v) ? 0x7FC00000u : BitConverter.SingleToUInt32Bits(v);
    }
}
