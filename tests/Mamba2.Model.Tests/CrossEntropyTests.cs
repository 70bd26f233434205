using Mamba2.Model.Ops;
using Mamba2.Model.Tensors;
using Mamba2.Model.Tests.Reference;
using Mamba2.Tests;
using Mamba2.Vulkan;
using Xunit;

namespace Mamba2.Model.Tests;

public class CrossEntropyTests(GpuFixture gpu)
{
    private GpuDevice Device => gpu.Device;

    /// <summary>Float64 reference: mean over counted rows of logsumexp(l) - l[target], and its gradient times dloss.</summary>
    private static (double Loss, double[] DLogits) Reference(float[] logits, int[] targets, int vocab, int ignore, double dloss)
    {
        double sum = 0;
        var count = 0;
        var d = new double[logits.Length];
        for (var r = 0; r < targets.Length; r++)
        {
            if (targets[r] == ignore)
            {
                continue;
            }

            var row = logits.AsSpan(r * vocab, vocab);
            double m = double.NegativeInfinity;
            foreach (var v in row)
            {
                m = Math.Max(m, v);
            }

            double s = 0;
            foreach (var v in row)
            {
                s += Math.Exp(v - m);
            }

            var lse = m + Math.Log(s);
            sum += lse - row[targets[r]];
            count++;
            for (var j = 0; j < vocab; j++)
            {
                d[r * vocab + j] = Math.Exp(row[j] - lse) - (j == targets[r] ? 1 : 0);
            }
        }

        for (var i = 0; i < d.Length; i++)
        {
            d[i] *= dloss / count;
        }

        return (sum / count, d);
    }

    [Theory]
    [InlineData(new[] { 2, 37 }, 257)]      // (b, L) tokens over a byte vocabulary
    [InlineData(new[] { 5 }, 1000)]         // a row wider than the workgroup
    [InlineData(new[] { 3, 4 }, 3)]
    public void LossAndGradientMatchTheReference(int[] lead, int vocab)
    {
        RowWorkgroups.Each(() => CheckLossAndGradient(lead, vocab));
    }

    private void CheckLossAndGradient(int[] lead, int vocab)
    {
        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        var rows = lead.Aggregate(1, (a, b) => a * b);
        var lv = TestMath.Uniform(rng, (long)rows * vocab, -8, 8);
        var tv = Enumerable.Range(0, rows).Select(i => i % 4 == 1 ? CrossEntropy.DefaultIgnoreIndex : rng.Next(vocab)).ToArray();
        using var logits = Tensor.FromArray(Device, "logits", lv, [.. lead, vocab]);
        using var targets = IndexTensor.FromArray(Device, "targets", tv, lead);
        using var dloss = Tensor.FromArray(Device, "dloss", [0.75f], 1);
        using var result = CrossEntropy.Forward(logits, targets);
        using var dlogits = CrossEntropy.Backward(dloss, result, logits, targets);
        var (loss, d) = Reference(lv, tv, vocab, CrossEntropy.DefaultIgnoreIndex, 0.75);
        Assert.True(result.TargetsInRange());
        TestMath.AssertClose(result.Loss.ToArray(), [loss], 1e-6, $"loss seed {seed}");
        TestMath.AssertClose(dlogits.ToArray(), d, 1e-6, $"dlogits seed {seed}");
        Assert.Equal(logits.Shape, dlogits.Shape);
    }

    [Fact]
    public void ReferenceGradientMatchesFiniteDifferences()
    {
        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        const int rows = 4, vocab = 5;
        var lv = TestMath.Uniform(rng, rows * vocab, -3, 3);
        int[] tv = [1, CrossEntropy.DefaultIgnoreIndex, 4, 0];
        var (_, d) = Reference(lv, tv, vocab, CrossEntropy.DefaultIgnoreIndex, 1.0);
        var work = lv.Select(v => (double)v).ToArray();
        double Loss()
        {
            // The reference in float64 directly on the perturbed values.
            double sum = 0;
            var count = 0;
            for (var r = 0; r < rows; r++)
            {
                if (tv[r] == CrossEntropy.DefaultIgnoreIndex)
                {
                    continue;
                }

                var row = work.AsSpan(r * vocab, vocab).ToArray();
                var m = row.Max();
                sum += m + Math.Log(row.Sum(v => Math.Exp(v - m))) - row[tv[r]];
                count++;
            }

            return sum / count;
        }

        FiniteDifferences.Check([("logits", work, d)], Loss, $"cross-entropy seed {seed}");
    }

    [Fact]
    public void EveryRowIgnoredGivesNaNAsPyTorch()
    {
        using var logits = Tensor.FromArray(Device, "logits", [1f, 2f, 3f, 4f], 2, 2);
        using var targets = IndexTensor.FromArray(Device, "targets", [-1, -1], 2);
        using var result = CrossEntropy.Forward(logits, targets, ignoreIndex: -1);
        Assert.True(float.IsNaN(result.Loss.ToArray()[0]));
    }

    [Fact]
    public void OutOfRangeTargetsAndBadShapesAreRejected()
    {
        using var logits = Tensor.FromArray(Device, "logits", new float[6], 2, 3);
        using var bad = IndexTensor.FromArray(Device, "targets", [0, 3], 2);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => CrossEntropy.Forward(logits, bad));
        Assert.Contains("outside [0, 3)", e.Message);

        using var wrong = IndexTensor.FromArray(Device, "targets", [0, 1, 2], 3);
        var shape = Assert.Throws<ArgumentException>(() => CrossEntropy.Forward(logits, wrong));
        Assert.Equal("targets", shape.ParamName);
        Assert.Contains("(2)", shape.Message);
    }
}
