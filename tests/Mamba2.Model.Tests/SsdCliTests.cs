using Mamba2.Cli;
using Mamba2.Model.IO;
using Mamba2.Model.Ops;
using Mamba2.Model.Ops.Ssd;
using Mamba2.Model.Tests.Reference;
using Mamba2.Tests;
using Xunit;

namespace Mamba2.Model.Tests;

/// <summary>`mamba2 ssd` end to end: a safetensors file in, y and final_states out, checked against the reference.</summary>
public sealed class SsdCliTests(GpuFixture gpu) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("mamba2-ssd-cli-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static SsdCase MakeCase(Random rng)
    {
        int b = 2, l = 45, h = 4, p = 8, g = 2, n = 12;
        return new SsdCase(b, l, h, p, g, n, 32,
            X: TestMath.Uniform(rng, b * l * h * p, -1, 1), Dt: TestMath.Uniform(rng, b * l * h, -3, 1), A: TestMath.Uniform(rng, h, -2, -0.2),
            B: TestMath.Uniform(rng, b * l * g * n, -1, 1), C: TestMath.Uniform(rng, b * l * g * n, -1, 1),
            D: TestMath.Uniform(rng, h, -1, 1), DPerHeadDim: false, Z: TestMath.Uniform(rng, b * l * h * p, -2, 2), DtBias: TestMath.Uniform(rng, h, -1, 0.5),
            InitialStates: TestMath.Uniform(rng, b * h * p * n, -1, 1), DtSoftplus: true, DtMin: 0.01f, DtMax: 0.5f);
    }

    /// <summary>The case's tensors under mamba_chunk_scan_combined's argument names, x in F64 as PyTorch users often save it.</summary>
    private static List<HostTensor> Inputs(SsdCase c)
    {
        int b = c.Batch, l = c.SeqLen, h = c.Heads, p = c.HeadDim, g = c.Groups, n = c.DState;
        return
        [
            HostTensor.FromFloat64("x", c.X.Select(v => (double)v).ToArray(), b, l, h, p),
            HostTensor.FromFloat32("dt", c.Dt, b, l, h),
            HostTensor.FromFloat32("A", c.A, h),
            HostTensor.FromFloat32("B", c.B, b, l, g, n),
            HostTensor.FromFloat32("C", c.C, b, l, g, n),
            HostTensor.FromFloat32("D", c.D!, h),
            HostTensor.FromFloat32("z", c.Z!, b, l, h, p),
            HostTensor.FromFloat32("dt_bias", c.DtBias!, h),
            HostTensor.FromFloat32("initial_states", c.InitialStates!, b, h, p, n),
        ];
    }

    // The exact mode, whatever the device's default (fp32-fast on a GPU with tensor cores): compared at 1e-5.
    private static readonly string[] Flags = ["--chunk-size", "32", "--dt-softplus", "--dt-limit", "0.01,0.5", "--precision", "fp32"];

    [Fact]
    public void WritesYAndFinalStatesMatchingTheReference()
    {
        var seed = TestMath.NewSeed();
        var c = MakeCase(new Random(seed));
        var input = Path.Combine(_dir, "in.safetensors");
        var output = Path.Combine(_dir, "out.safetensors");
        SafetensorsWriter.Write(input, Inputs(c));

        var code = CliApp.Run(["ssd", "--input", input, "--output", output, .. Flags]);

        Assert.Equal(0, code);
        var result = SafetensorsFile.ReadAll(output);
        var (yRef, finalRef) = SsdReference.Forward(c);
        Assert.Equal(["final_states", "y"], result.Keys.Order());
        Assert.Equal(SafetensorsDType.F32, result["y"].DType);
        Assert.Equal([c.Batch, c.SeqLen, c.Heads, c.HeadDim], result["y"].Shape);
        Assert.Equal([c.Batch, c.Heads, c.HeadDim, c.DState], result["final_states"].Shape);
        TestMath.AssertClose(result["y"].ToFloat32(), yRef, 1e-5, $"cli y seed {seed}");
        TestMath.AssertClose(result["final_states"].ToFloat32(), finalRef, 1e-5, $"cli final_states seed {seed}");
    }

    [Fact]
    public void WithDyWritesTheGradientOfEveryInput()
    {
        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        var c = MakeCase(rng);
        var dy = TestMath.Uniform(rng, (long)c.Batch * c.SeqLen * c.Heads * c.HeadDim, -1, 1);
        var dFinal = TestMath.Uniform(rng, (long)c.Batch * c.Heads * c.HeadDim * c.DState, -1, 1);
        var input = Path.Combine(_dir, "in.safetensors");
        var output = Path.Combine(_dir, "out.safetensors");
        SafetensorsWriter.Write(input,
        [
            .. Inputs(c),
            HostTensor.FromFloat32("dy", dy, c.Batch, c.SeqLen, c.Heads, c.HeadDim),
            HostTensor.FromFloat32("dfinal_states", dFinal, c.Batch, c.Heads, c.HeadDim, c.DState),
        ]);

        Assert.Equal(0, CliApp.Run(["ssd", "--input", input, "--output", output, .. Flags]));

        var result = SafetensorsFile.ReadAll(output);
        var expected = SsdReferenceBackward.Gradients(c, Array.ConvertAll(dy, v => (double)v), Array.ConvertAll(dFinal, v => (double)v));
        foreach (var (name, reference) in expected.Named())
        {
            var grad = result["grad_" + name];
            Assert.Equal(Inputs(c).Single(t => t.Name == name).Shape, grad.Shape);
            TestMath.AssertClose(grad.ToFloat32(), reference, expected.ErrorScale(name, reference), 1e-5, $"cli grad_{name} seed {seed}");
        }

        Assert.Equal(2 + 9, result.Count);
    }

    [Fact]
    public void BidirectionalShiftWithReverseTensorsAndGradients()
    {
        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        var c = SsdCases.Bidirectional(rng, Mamba2.Model.Ops.Ssd.SsdDirection.BidirectionalShift, 2, 33, 2, 8, 1, 8, 16,
            d: true, dPerToken: true, z: true, bias: true, softplus: true, reverseTensors: true);
        var dy = TestMath.Uniform(rng, (long)c.Batch * c.SeqLen * c.Heads * c.HeadDim, -1, 1);
        int b = c.Batch, l = c.SeqLen, h = c.Heads, p = c.HeadDim, g = c.Groups, n = c.DState;
        var input = Path.Combine(_dir, "bi.safetensors");
        var output = Path.Combine(_dir, "bi-out.safetensors");
        SafetensorsWriter.Write(input,
        [
            HostTensor.FromFloat32("x", c.X, b, l, h, p), HostTensor.FromFloat32("dt", c.Dt, b, l, h), HostTensor.FromFloat32("A", c.A, h),
            HostTensor.FromFloat32("B", c.B, b, l, g, n), HostTensor.FromFloat32("C", c.C, b, l, g, n), HostTensor.FromFloat32("D", c.D!, b, l, h),
            HostTensor.FromFloat32("z", c.Z!, b, l, h, p), HostTensor.FromFloat32("dt_bias", c.DtBias!, h),
            HostTensor.FromFloat32("dt_rev", c.DtRev!, b, l, h), HostTensor.FromFloat32("B_rev", c.BRev!, b, l, g, n), HostTensor.FromFloat32("C_rev", c.CRev!, b, l, g, n),
            HostTensor.FromFloat32("dy", dy, b, l, h, p),
        ]);

        Assert.Equal(0, CliApp.Run(["ssd", "--input", input, "--output", output, "--chunk-size", "16", "--dt-softplus", "--bidirectional", "--bidirectional-mode", "shift",
            "--precision", "fp32"]));

        var result = SafetensorsFile.ReadAll(output);
        var v = c.ToFloat64();
        TestMath.AssertClose(result["y"].ToFloat32(), SsdBidirectionalReference.Forward(c, v).Y, 1e-5, $"cli bidirectional y seed {seed}");
        var expected = SsdBidirectionalReference.Gradients(c, v, Array.ConvertAll(dy, x => (double)x), null);
        foreach (var (name, reference) in expected.Named())
        {
            TestMath.AssertClose(result["grad_" + name].ToFloat32(), reference, expected.ErrorScale(name, reference), 1e-5, $"cli bidirectional grad_{name} seed {seed}");
        }

        Assert.Equal(2 + 11, result.Count);
    }

    /// <summary>
    /// BF16 x, B, C, z and dy with --precision bf16: run as bf16 tensors, so y and the gradients of those inputs come
    /// back BF16 (the rest F32), matching the reference on the same values at bf16's tolerance.
    /// </summary>
    [Fact]
    public void Bf16InputsGiveBf16OutputsAtBf16sTolerance()
    {
        if (SsdOp.WhyNot(gpu.Device, Precision.Bf16) is not null || !gpu.Device.Capabilities.Storage16Bit)
        {
            return;   // PrecisionCliTests holds a refused --precision to its reason
        }

        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        var c = MakeCase(rng);
        c = SsdBf16TensorTests.Rounded(c);
        var dy = SsdBf16TensorTests.Round(TestMath.Uniform(rng, (long)c.Batch * c.SeqLen * c.Heads * c.HeadDim, -1, 1));
        var input = Path.Combine(_dir, "in16.safetensors");
        var output = Path.Combine(_dir, "out16.safetensors");
        var bf16 = new HashSet<string> { "x", "B", "C", "z" };
        SafetensorsWriter.Write(input,
        [
            .. Inputs(c).Select(t => bf16.Contains(t.Name) ? t.Convert(SafetensorsDType.BF16) : t),
            HostTensor.FromFloat32("dy", dy, c.Batch, c.SeqLen, c.Heads, c.HeadDim).Convert(SafetensorsDType.BF16),
        ]);

        Assert.Equal(0, CliApp.Run(["ssd", "--input", input, "--output", output, "--chunk-size", "32", "--dt-softplus", "--dt-limit", "0.01,0.5", "--precision", "bf16"]));

        var result = SafetensorsFile.ReadAll(output);
        var tolerance = Precision.Bf16.Tolerance();
        Assert.Equal(SafetensorsDType.BF16, result["y"].DType);
        Assert.Equal(SafetensorsDType.F32, result["final_states"].DType);
        var (yRef, finalRef) = SsdReference.Forward(c);
        TestMath.AssertClose(result["y"].ToFloat32(), yRef, tolerance, $"cli bf16 y seed {seed}");
        TestMath.AssertClose(result["final_states"].ToFloat32(), finalRef, tolerance, $"cli bf16 final_states seed {seed}");
        var expected = SsdReferenceBackward.Gradients(c, Array.ConvertAll(dy, v => (double)v), null);
        foreach (var (name, reference) in expected.Named())
        {
            var grad = result["grad_" + name];
            Assert.Equal(bf16.Contains(name) ? SafetensorsDType.BF16 : SafetensorsDType.F32, grad.DType);
            TestMath.AssertClose(grad.ToFloat32(), reference, expected.ErrorScale(name, reference), tolerance, $"cli bf16 grad_{name} seed {seed}");
        }
    }

    /// <summary>
    /// The bidirectional sum form on BF16 inputs with --precision bf16: bf16 tensors too (no reverse-scan tensors), so y
    /// and the gradients of x, B, C and z come back BF16; with B_rev in the file the run stays fp32 and writes F32.
    /// </summary>
    [Fact]
    public void Bf16InputsOfTheBidirectionalFormsGiveBf16OutputsWithoutReverseTensors()
    {
        if (SsdOp.WhyNot(gpu.Device, Precision.Bf16) is not null || !gpu.Device.Capabilities.Storage16Bit)
        {
            return;
        }

        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        var c = SsdBf16TensorTests.Rounded(SsdCases.Bidirectional(rng, SsdDirection.BidirectionalSum, 2, 33, 2, 8, 1, 8, 16, d: true, z: true, bias: true, softplus: true));
        var dy = SsdBf16TensorTests.Round(TestMath.Uniform(rng, (long)c.Batch * c.SeqLen * c.Heads * c.HeadDim, -1, 1));
        int b = c.Batch, l = c.SeqLen, h = c.Heads, p = c.HeadDim, g = c.Groups, n = c.DState;
        HostTensor Bf16(string name, float[] data, params int[] shape) => HostTensor.FromFloat32(name, data, shape).Convert(SafetensorsDType.BF16);
        List<HostTensor> inputs =
        [
            Bf16("x", c.X, b, l, h, p), HostTensor.FromFloat32("dt", c.Dt, b, l, h), HostTensor.FromFloat32("A", c.A, h),
            Bf16("B", c.B, b, l, g, n), Bf16("C", c.C, b, l, g, n), HostTensor.FromFloat32("D", c.D!, h),
            Bf16("z", c.Z!, b, l, h, p), HostTensor.FromFloat32("dt_bias", c.DtBias!, h), Bf16("dy", dy, b, l, h, p),
        ];
        var input = Path.Combine(_dir, "bi16.safetensors");
        var output = Path.Combine(_dir, "bi16-out.safetensors");
        string[] run = ["ssd", "--input", input, "--output", output, "--chunk-size", "16", "--dt-softplus", "--bidirectional", "--precision", "bf16"];
        SafetensorsWriter.Write(input, inputs);
        Assert.Equal(0, CliApp.Run(run));

        var result = SafetensorsFile.ReadAll(output);
        var v = c.ToFloat64();
        var tolerance = Precision.Bf16.Tolerance();
        Assert.Equal(SafetensorsDType.BF16, result["y"].DType);
        TestMath.AssertClose(result["y"].ToFloat32(), SsdBidirectionalReference.Forward(c, v).Y, tolerance, $"cli bf16 bidirectional y seed {seed}");
        var expected = SsdBidirectionalReference.Gradients(c, v, Array.ConvertAll(dy, x => (double)x), null);
        foreach (var (name, reference) in expected.Named())
        {
            var grad = result["grad_" + name];
            Assert.Equal(name is "x" or "B" or "C" or "z" ? SafetensorsDType.BF16 : SafetensorsDType.F32, grad.DType);
            TestMath.AssertClose(grad.ToFloat32(), reference, expected.ErrorScale(name, reference), tolerance, $"cli bf16 bidirectional grad_{name} seed {seed}");
        }

        // The reverse scan's own B: fp32 tensors (widened exactly), fp32 outputs.
        SafetensorsWriter.Write(input, [.. inputs, Bf16("B_rev", c.B, b, l, g, n)]);
        Assert.Equal(0, CliApp.Run(run));
        Assert.Equal(SafetensorsDType.F32, SafetensorsFile.ReadAll(output)["y"].DType);
    }

    [Fact]
    public void MissingOrMismatchedTensorsExitWithTwo()
    {
        var rng = new Random(TestMath.NewSeed());
        var input = Path.Combine(_dir, "bad.safetensors");
        var output = Path.Combine(_dir, "never.safetensors");
        SafetensorsWriter.Write(input, [HostTensor.FromFloat32("x", TestMath.Uniform(rng, 2 * 3 * 4, -1, 1), 1, 2, 3, 4)]);
        var stderr = new StringWriter();
        var previous = Console.Error;
        Console.SetError(stderr);
        try
        {
            Assert.Equal(CliApp.BadInput, CliApp.Run(["ssd", "--input", input, "--output", output]));
            Assert.Contains("lacks dt, A, B, C", stderr.ToString());

            SafetensorsWriter.Write(input,
            [
                HostTensor.FromFloat32("x", TestMath.Uniform(rng, 24, -1, 1), 1, 2, 3, 4),
                HostTensor.FromFloat32("dt", TestMath.Uniform(rng, 6, 0, 1), 1, 2, 3),
                HostTensor.FromFloat32("A", TestMath.Uniform(rng, 3, -1, 0), 3),
                HostTensor.FromFloat32("B", TestMath.Uniform(rng, 10, -1, 1), 1, 2, 1, 5),
                HostTensor.FromFloat32("C", TestMath.Uniform(rng, 12, -1, 1), 1, 2, 1, 6),
            ]);
            Assert.Equal(CliApp.BadInput, CliApp.Run(["ssd", "--input", input, "--output", output]));
            Assert.Contains("C must have shape (1, 2, 1, 5), got (1, 2, 1, 6)", stderr.ToString());

            Assert.Equal(CliApp.BadInput, CliApp.Run(["ssd", "--input", input, "--output", output, "--dt-limit", "a,b"]));

            SafetensorsWriter.Write(input, [.. Inputs(MakeCase(rng)), HostTensor.FromFloat32("dfinal_states", new float[2 * 4 * 8 * 12], 2, 4, 8, 12)]);
            Assert.Equal(CliApp.BadInput, CliApp.Run(["ssd", "--input", input, "--output", output]));
            Assert.Contains("dfinal_states but no dy", stderr.ToString());

            SafetensorsWriter.Write(input, [.. Inputs(MakeCase(rng)), HostTensor.FromFloat32("dy", new float[2 * 45 * 4 * 7], 2, 45, 4, 7)]);
            Assert.Equal(CliApp.BadInput, CliApp.Run(["ssd", "--input", input, "--output", output]));
            Assert.Contains("dy must have shape (2, 45, 4, 8), got (2, 45, 4, 7)", stderr.ToString());

            SafetensorsWriter.Write(input, Inputs(MakeCase(rng)));
            Assert.Equal(CliApp.BadInput, CliApp.Run(["ssd", "--input", input, "--output", output, "--bidirectional-mode", "shift"]));
            Assert.Contains("needs --bidirectional", stderr.ToString());
            Assert.Equal(CliApp.BadInput, CliApp.Run(["ssd", "--input", input, "--output", output, "--bidirectional"]));
            Assert.Contains("initial_states is for the causal scan", stderr.ToString());
            Assert.False(File.Exists(output));
        }
        finally
        {
            Console.SetError(previous);
        }
    }
}
