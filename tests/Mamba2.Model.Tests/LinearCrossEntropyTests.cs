using Mamba2.Model.Ops;
using Mamba2.Model.Tensors;
using Mamba2.Model.Tests.Reference;
using Mamba2.Tests;
using Mamba2.Vulkan;
using Xunit;

namespace Mamba2.Model.Tests;

/// <summary>The LM head and cross-entropy in row blocks against float64: loss, both gradients, each row's argmax.</summary>
public class LinearCrossEntropyTests(GpuFixture gpu)
{
    private GpuDevice Device => gpu.Device;

    /// <summary>Float64: logits = h W^T, the mean cross-entropy over counted rows, d h and d W of that mean.</summary>
    private static (double[] Logits, double Loss, double[] DH, double[] DW) Reference(double[] h, double[] w, int[] targets, int d, int vocab, int ignore)
    {
        var rows = targets.Length;
        var logits = new double[rows * vocab];
        for (var r = 0; r < rows; r++)
        {
            for (var j = 0; j < vocab; j++)
            {
                double s = 0;
                for (var k = 0; k < d; k++)
                {
                    s += h[r * d + k] * w[j * d + k];
                }

                logits[r * vocab + j] = s;
            }
        }

        var count = targets.Count(t => t != ignore);
        double loss = 0;
        var dh = new double[rows * d];
        var dw = new double[vocab * d];
        for (var r = 0; r < rows; r++)
        {
            if (targets[r] == ignore)
            {
                continue;
            }

            var row = logits.AsSpan(r * vocab, vocab).ToArray();
            var m = row.Max();
            var lse = m + Math.Log(row.Sum(x => Math.Exp(x - m)));
            loss += lse - row[targets[r]];
            for (var j = 0; j < vocab; j++)
            {
                var g = (Math.Exp(row[j] - lse) - (j == targets[r] ? 1 : 0)) / count;
                for (var k = 0; k < d; k++)
                {
                    dh[r * d + k] += g * w[j * d + k];
                    dw[j * d + k] += g * h[r * d + k];
                }
            }
        }

        return (logits, loss / count, dh, dw);
    }

    // An even vocabulary lets the row pass write the 16-bit products' operands itself; an odd one is packed after it.
    // A multiple of 4 moves four logits at a time, streamed (the row read twice) or, where asked (MAMBA2_CE_ROWS=held),
    // each workgroup holding its row in registers where it fits.
    // bf16ViaF16: bf16's products as scaled f16 (MAMBA2_BF16_PRODUCTS=f16), what devices without bf16 cooperative
    // matrices run (and bf16 itself there).
    public static TheoryData<Precision, long, int, bool, bool> Cases => new()
    {
        { Precision.Fp32, 40_000, 131, false, false },                          // blocks of 64 rows and a 9-row tail
        { Precision.Fp32, LinearCrossEntropy.MinDefaultBlockBytes, 132, false, false },   // one block
        { Precision.Fp32Fast, 40_000, 131, false, false },
        { Precision.Fp32Fast, 40_000, 132, false, false },
        { Precision.Bf16, 40_000, 131, false, false },
        { Precision.Bf16, 40_000, 132, false, false },
        { Precision.Bf16, 40_000, 132, true, false },
        { Precision.Bf16, 40_000, 130, false, false },                          // even, not a multiple of 4: words one at a time
        { Precision.Fp32, 40_000, 1028, false, true },
        { Precision.Bf16, 40_000, 1028, false, true },
        { Precision.Bf16, 40_000, 1028, false, false },                         // held where a workgroup holds 1,028
        { Precision.Fp32, LinearCrossEntropy.MinDefaultBlockBytes, 32_772, false, false },   // held by 512 invocations
        { Precision.Bf16, LinearCrossEntropy.MinDefaultBlockBytes, 32_772, false, false },
    };

    [Theory]
    [InlineData("held", true)]
    [InlineData(" Streamed ", false)]
    [InlineData(null, null)]
    [InlineData("Auto", null)]
    public void LogitRowsVariableNamesAForm(string? text, bool? held) => Assert.Equal(held, OpTuning.ParseLogitRows(text));

    [Fact]
    public void UnknownLogitRowsNameTheVariable()
    {
        var e = Assert.Throws<ArgumentException>(() => OpTuning.ParseLogitRows("twice"));
        Assert.StartsWith($"{OpTuning.LogitRowsVariable}=twice:", e.Message);
    }

    /// <summary>A held row fits its workgroup (every logit has a place) and the register budget; else it streams.</summary>
    [Theory]
    [InlineData(132)]
    [InlineData(1028)]
    [InlineData(50_280)]
    [InlineData(50_281)]
    [InlineData(262_144)]
    public void TheRowPassHoldsOnlyRowsThatFit(int vocab)
    {
        CrossEntropyRowsSpec Pass(bool? hold)
        {
            using var tuning = OpTuning.Override(Device, t => t with { HoldLogitRows = hold });
            return LinearCrossEntropy.RowPass(Device, vocab, CrossEntropyRowsGradient.Bf16, argmax: true);
        }

        var streamed = Pass(false);
        var pass = Pass(true);
        Assert.Equal(0u, streamed.Held);
        Assert.Equal(LinearCrossEntropy.HoldsRowsByDefault(Device) ? pass : streamed, Pass(null));

        Assert.Equal(vocab % 4 == 0, pass.Quads);
        if (vocab == 132)
        {
            Assert.True(pass.Held > 0, "any device's workgroup holds 132 logits");
        }

        if (vocab == 50_280 && Device.Capabilities.MaxWorkgroupInvocationsX >= 512)
        {
            Assert.Equal((512u, 100u), (pass.Local, pass.Held));   // GPT-NeoX's vocabulary: 512 invocations x 100
        }

        if (pass.Held == 0)
        {
            return;
        }

        Assert.True(pass.Quads, "a held row moves four logits at a time");
        Assert.Equal(0u, pass.Held % 4);
        Assert.InRange(pass.Held, 4u, (uint)LinearCrossEntropy.MaxHeld);
        Assert.True((long)pass.Held * pass.Local >= vocab, $"{pass.Local} x {pass.Held} holds fewer than {vocab} logits");
        Assert.True((pass.Held + 24) * pass.Local <= 65_536, $"{pass.Local} x {pass.Held} is over the register budget");
        Assert.True(pass.Local >= Device.Capabilities.SubgroupSize, "at least a subgroup");
    }

    [Theory]
    [MemberData(nameof(Cases))]
    public void LossGradientsAndPredictionsMatchTheReference(Precision precision, long blockBytes, int vocab, bool bf16ViaF16, bool streamed)
    {
        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        const int b = 3, l = 67, d = 24;
        using var tuning = OpTuning.Override(Device, t => t with
        {
            Bf16Products = bf16ViaF16 ? GemmOperands.Bf16ViaF16 : null,
            HoldLogitRows = !streamed,
        });
        var pass = LinearCrossEntropy.RowPass(Device, vocab, CrossEntropyRowsGradient.Bf16, false);
        if (streamed || vocab % 4 != 0)
        {
            Assert.Equal(0u, pass.Held);
        }
        else if (vocab == 32_772 && Device.Capabilities.MaxWorkgroupInvocationsX >= 512)
        {
            Assert.Equal((512u, 68u), (pass.Local, pass.Held));
        }

        var what = $"{precision.Name()}{(bf16ViaF16 ? " via f16" : "")} block {blockBytes} vocab {vocab} held {pass.Held} seed {seed}";
        var hv = TestMath.Uniform(rng, b * l * d, -1, 1);
        var wv = TestMath.Uniform(rng, vocab * d, -1, 1);
        if (precision == Precision.Bf16)
        {
            // The policy's bf16 reference: float64 on the same bf16-rounded inputs.
            hv = [.. hv.Select(v => TensorCoreGemmTests.Round(v, GemmOperands.Bf16))];
            wv = [.. wv.Select(v => TensorCoreGemmTests.Round(v, GemmOperands.Bf16))];
        }

        var tv = Enumerable.Range(0, b * l).Select(i => i % 5 == 2 ? CrossEntropy.DefaultIgnoreIndex : rng.Next(vocab)).ToArray();
        using var hidden = Tensor.FromArray(Device, "hidden", hv, b, l, d);
        using var weight = Tensor.FromArray(Device, "weight", wv, vocab, d);
        using var targets = IndexTensor.FromArray(Device, "targets", tv, b, l);
        using var dHidden = Tensor.Empty(Device, "d_hidden", b, l, d);
        using var dWeight = Tensor.Empty(Device, "d_weight", vocab, d);
        Poison.Fill(dHidden, dWeight);
        if (!PrecisionAvailability.Runs(Device, precision))
        {
            Assert.Throws<MissingFeatureException>(() => LinearCrossEntropy.Run(hidden, weight, targets, precision: precision, dHidden: dHidden, dWeight: dWeight));
            return;
        }

        using var result = LinearCrossEntropy.Run(hidden, weight, targets, predictions: true, precision: precision, blockBytes: blockBytes,
            dHidden: dHidden, dWeight: dWeight);
        var (logits, loss, dh, dw) = Reference([.. hv.Select(v => (double)v)], [.. wv.Select(v => (double)v)], tv, d, vocab, CrossEntropy.DefaultIgnoreIndex);
        var tolerance = precision.Tolerance();
        TestMath.AssertClose(result.Loss.ToArray(), [loss], tolerance, $"{what}: loss");
        TestMath.AssertClose(dHidden.ToArray(), dh, tolerance, $"{what}: d hidden");
        TestMath.AssertClose(dWeight.ToArray(), dw, tolerance, $"{what}: d weight");
        Assert.Same(dHidden, result.DHidden);

        // Each prediction is a row's largest logit, up to the mode's rounding of near ties.
        var predicted = result.Predictions();
        Assert.Equal(b * l, predicted.Length);
        for (var r = 0; r < predicted.Length; r++)
        {
            var row = logits.AsSpan(r * vocab, vocab).ToArray();
            Assert.InRange(predicted[r], 0, vocab - 1);
            Assert.True(row[predicted[r]] >= row.Max() - 4 * tolerance * row.Max(Math.Abs), $"{what}: row {r} predicts {predicted[r]}, not the largest logit");
        }
    }

    [Fact]
    public void AllocatedGradientsAndTheLossOnlyRun()
    {
        var rng = new Random(TestMath.NewSeed());
        const int rows = 70, d = 8, vocab = 9;
        var hv = TestMath.Uniform(rng, rows * d, -1, 1);
        var wv = TestMath.Uniform(rng, vocab * d, -1, 1);
        var tv = Enumerable.Range(0, rows).Select(_ => rng.Next(vocab)).ToArray();
        using var hidden = Tensor.FromArray(Device, "hidden", hv, rows, d);
        using var weight = Tensor.FromArray(Device, "weight", wv, vocab, d);
        using var targets = IndexTensor.FromArray(Device, "targets", tv, rows);
        using var lossOnly = LinearCrossEntropy.Run(hidden, weight, targets, gradients: false, blockBytes: 1);
        Assert.Null(lossOnly.DHidden);
        Assert.Null(lossOnly.DWeight);
        Assert.Throws<InvalidOperationException>(() => lossOnly.Predictions());
        using var full = LinearCrossEntropy.Run(hidden, weight, targets, blockBytes: 1);
        var (_, loss, dh, dw) = Reference([.. hv.Select(v => (double)v)], [.. wv.Select(v => (double)v)], tv, d, vocab, CrossEntropy.DefaultIgnoreIndex);
        TestMath.AssertClose(lossOnly.Loss.ToArray(), [loss], 1e-5, "loss only");
        TestMath.AssertClose(full.Loss.ToArray(), [loss], 1e-5, "loss");
        TestMath.AssertClose(full.DHidden!.ToArray(), dh, 1e-5, "d hidden");
        TestMath.AssertClose(full.DWeight!.ToArray(), dw, 1e-5, "d weight");
        Assert.Equal([rows, d], full.DHidden.Shape);
    }

    [Fact]
    public void ReferenceGradientsMatchFiniteDifferences()
    {
        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        const int rows = 5, d = 3, vocab = 4;
        var h = TestMath.Uniform(rng, rows * d, -1, 1).Select(v => (double)v).ToArray();
        var w = TestMath.Uniform(rng, vocab * d, -1, 1).Select(v => (double)v).ToArray();
        int[] tv = [2, CrossEntropy.DefaultIgnoreIndex, 0, 3, 1];
        var (_, _, dh, dw) = Reference(h, w, tv, d, vocab, CrossEntropy.DefaultIgnoreIndex);
        FiniteDifferences.Check([("hidden", h, dh), ("weight", w, dw)], () => Reference(h, w, tv, d, vocab, CrossEntropy.DefaultIgnoreIndex).Loss,
            $"linear cross-entropy seed {seed}");
    }

    [Fact]
    public void EveryRowIgnoredGivesANaNLossAndZeroGradientsAsPyTorch()
    {
        using var hidden = Tensor.FromArray(Device, "hidden", [1f, 2f, 3f, 4f], 2, 2);
        using var weight = Tensor.FromArray(Device, "weight", [1f, 0f, 0f, 1f, 1f, 1f], 3, 2);
        using var targets = IndexTensor.FromArray(Device, "targets", [-1, -1], 2);
        using var result = LinearCrossEntropy.Run(hidden, weight, targets, ignoreIndex: -1);
        Assert.True(float.IsNaN(result.Loss.ToArray()[0]));
        Assert.All(result.DHidden!.ToArray(), v => Assert.Equal(0f, v));
        Assert.All(result.DWeight!.ToArray(), v => Assert.Equal(0f, v));
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void ARowOfNaNMakesTheLossNaNAndPredictsZeroAsArgmaxRows(bool gradients)
    {
        // Row 1's hidden state is NaN, so are its logits: PyTorch's mean loss is NaN; argmax_rows's answer for an
        // all-NaN row is 0, and a NaN never wins elsewhere.
        using var hidden = Tensor.FromArray(Device, "hidden", [1f, 2f, float.NaN, 0f, -3f, 1f], 3, 2);
        using var weight = Tensor.FromArray(Device, "weight", [1f, 0f, 0f, 1f, 1f, 1f, -1f, 0f], 4, 2);
        using var targets = IndexTensor.FromArray(Device, "targets", [0, 1, 3], 3);
        using var result = LinearCrossEntropy.Run(hidden, weight, targets, gradients: gradients, predictions: true);
        Assert.True(float.IsNaN(result.Loss.ToArray()[0]));
        Assert.Equal([2, 0, 3], result.Predictions());   // logits (1, 2, 3, -1), NaN, (-3, 1, -2, 3)
    }

    [Fact]
    public void BadTargetsShapesAndOutputsAreRejectedBeforeTheGpu()
    {
        using var hidden = Tensor.FromArray(Device, "hidden", new float[6], 2, 3);
        using var weight = Tensor.FromArray(Device, "weight", new float[12], 4, 3);
        using var bad = IndexTensor.FromArray(Device, "targets", [0, 4], 2);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => LinearCrossEntropy.Run(hidden, weight, bad));
        Assert.Equal("targets", e.ParamName);
        Assert.Contains("target 4 at index 1 is outside [0, 4)", e.Message);

        using var targets = IndexTensor.FromArray(Device, "targets", [0, 1], 2);
        using var wrongWidth = Tensor.FromArray(Device, "weight", new float[8], 4, 2);
        Assert.Equal("weight", Assert.Throws<ArgumentException>(() => LinearCrossEntropy.Run(hidden, wrongWidth, targets)).ParamName);
        using var three = IndexTensor.FromArray(Device, "targets", [0, 1, 2], 3);
        Assert.Equal("targets", Assert.Throws<ArgumentException>(() => LinearCrossEntropy.Run(hidden, weight, three)).ParamName);
        using var dWeight = Tensor.Empty(Device, "d_weight", 4, 3);
        Assert.Equal("dHidden", Assert.Throws<ArgumentException>(() => LinearCrossEntropy.Run(hidden, weight, targets, dWeight: dWeight)).ParamName);
        using var dHidden = Tensor.Empty(Device, "d_hidden", 3, 2);
        Assert.Equal("dHidden", Assert.Throws<ArgumentException>(() => LinearCrossEntropy.Run(hidden, weight, targets, dHidden: dHidden, dWeight: dWeight)).ParamName);
        Assert.Equal("gradients", Assert.Throws<ArgumentException>(() => LinearCrossEntropy.Run(hidden, weight, targets, gradients: false, dWeight: dWeight)).ParamName);
    }

    [Theory]
    [InlineData(16384, 50280, 512L << 20, 2368)]   // the 370m-class LM step: 7 blocks, the last of 2,176 rows
    [InlineData(100, 10, 512L << 20, 100)]         // all rows in one block
    [InlineData(200, 1000, 1, 64)]                 // never under 64 rows
    public void BlocksAreEvenMultiplesOf64Rows(long rows, int vocab, long blockBytes, int expected) =>
        Assert.Equal(expected, LinearCrossEntropy.BlockRows(rows, vocab, blockBytes));
}
