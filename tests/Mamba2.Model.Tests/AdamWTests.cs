using Mamba2.Model.Modules;
using Mamba2.Model.Tensors;
using Mamba2.Model.Training;
using Mamba2.Tests;
using Mamba2.Vulkan;
using Xunit;

namespace Mamba2.Model.Tests;

public class AdamWTests(GpuFixture gpu)
{
    private GpuDevice Device => gpu.Device;

    /// <summary>Float64 torch.optim.AdamW step (after clip_grad_norm_ when maxNorm is given), in place.</summary>
    private static void ReferenceStep(List<double[]> ps, List<double[]> ms, List<double[]> vs, List<float[]> gs, bool[] decay, int step,
        double lr, double b1, double b2, double eps, double wd, double? maxNorm)
    {
        var scale = 1.0;
        if (maxNorm is { } max)
        {
            var total = Math.Sqrt(gs.Sum(g => g.Sum(x => (double)x * x)));
            scale = Math.Min(1, max / (total + 1e-6));
        }

        var bc1 = 1 - Math.Pow(b1, step);
        var bc2 = 1 - Math.Pow(b2, step);
        for (var t = 0; t < ps.Count; t++)
        {
            for (var i = 0; i < ps[t].Length; i++)
            {
                var g = gs[t][i] * scale;
                ms[t][i] = b1 * ms[t][i] + (1 - b1) * g;
                vs[t][i] = b2 * vs[t][i] + (1 - b2) * g * g;
                ps[t][i] *= 1 - lr * (decay[t] ? wd : 0);
                ps[t][i] -= lr / bc1 * ms[t][i] / (Math.Sqrt(vs[t][i]) / Math.Sqrt(bc2) + eps);
            }
        }
    }

    [Theory]
    [InlineData(null)]
    [InlineData(0.5f)]     // clipping active (the random gradients' norm is far above)
    [InlineData(1e6f)]     // clipping inactive
    public void StepsMatchTorchAdamW(float? maxNorm)
    {
        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        int[][] shapes = [[7, 5], [13], [3, 2, 4], [1500, 3]];   // the last: several elements per partial of the norm
        bool[] decay = [true, false, true, true];
        var init = shapes.Select(s => TestMath.Uniform(rng, s.Aggregate(1, (a, b) => a * b), -1, 1)).ToList();
        var tensors = shapes.Select((s, i) => Tensor.FromArray(Device, $"p{i}", init[i], s)).ToList();
        try
        {
            using var opt = new AdamW([.. tensors.Select((t, i) => new OptimizerParameter($"p{i}", t, decay[i]))], lr: 0.01f, weightDecay: 0.1f);
            var ps = init.Select(a => a.Select(v => (double)v).ToArray()).ToList();
            var ms = init.Select(a => new double[a.Length]).ToList();
            var vs = init.Select(a => new double[a.Length]).ToList();
            for (var step = 1; step <= 4; step++)
            {
                var gv = shapes.Select(s => TestMath.Uniform(rng, s.Aggregate(1, (a, b) => a * b), -2, 2)).ToList();
                var grads = gv.Select((g, i) => Tensor.FromArray(Device, $"g{i}", g, shapes[i])).ToList();
                opt.LearningRate = 0.01f * step;
                opt.Step(grads, maxNorm);
                ReferenceStep(ps, ms, vs, gv, decay, step, 0.01 * step, 0.9, 0.999, 1e-8, 0.1, maxNorm);
                if (maxNorm is not null)
                {
                    var norm = Math.Sqrt(gv.Sum(g => g.Sum(x => (double)x * x)));
                    TestMath.AssertClose([opt.LastGradNorm()], [norm], 1e-6, $"grad norm step {step} seed {seed}");
                }

                foreach (var g in grads)
                {
                    g.Dispose();
                }
            }

            Assert.Equal(4, opt.StepCount);
            for (var t = 0; t < tensors.Count; t++)
            {
                TestMath.AssertClose(tensors[t].ToArray(), ps[t], 1e-5, $"param {t} after 4 steps, max norm {maxNorm}, seed {seed}");
                TestMath.AssertClose(opt.State(t).ExpAvgSq.ToArray(), vs[t], 1e-5, $"exp_avg_sq {t} seed {seed}");
            }
        }
        finally
        {
            tensors.ForEach(t => t.Dispose());
        }
    }

    [Theory]
    [InlineData(0.5f)]
    [InlineData(null)]
    public void AStepRecordedIntoTheBackwardIsTheStepAfterIt(float? maxGradNorm)
    {
        // StepWhenFormed records the same dispatches into the backward's last stage: the same bits, step after step.
        var seed = TestMath.NewSeed();
        var config = new Mamba2LMConfig(VocabSize: 11, NLayer: 2, new Mamba2Config(DModel: 16) { DState = 8, HeadDim = 8, ChunkSize = 16 });
        using var after = Mamba2LM.Initialize(Device, config, new Random(seed));
        using var within = Mamba2LM.Initialize(Device, config, new Random(seed));
        var rng = new Random(seed + 1);
        var ids = Enumerable.Range(0, 2 * 19).Select(_ => rng.Next(config.VocabSize)).ToArray();
        using var input = IndexTensor.FromArray(Device, "input_ids", ids, 2, 19);
        using var targets = Mamba2LM.NextTokenTargets(input);
        AdamW Optimizer(Mamba2LM lm) => new([.. lm.Parameters.Select(p => new OptimizerParameter(p.Name, p.Value, !p.Name.EndsWith("D", StringComparison.Ordinal)))], lr: 1e-2f);
        using var optAfter = Optimizer(after);
        using var optWithin = Optimizer(within);
        for (var step = 0; step < 2; step++)
        {
            using (var acts = after.ForwardLoss(input, targets))
            {
                var g = after.Backward(acts);
                optAfter.Step([.. after.Parameters.Select(p => g[p.Name])], maxGradNorm);
                g.Values.ToList().ForEach(t => t.Dispose());
            }

            using (var acts = within.ForwardLoss(input, targets))
            {
                var listener = optWithin.StepWhenFormed(maxGradNorm);
                var g = within.Backward(acts, listener);
                g.Values.ToList().ForEach(t => t.Dispose());
                Assert.True(listener.Stepped);
                using var unused = Device.BeginStream();
                Assert.Throws<InvalidOperationException>(() => listener.Recorded(0, [], unused));
            }

            Assert.Equal(optAfter.LastGradNorm(), optWithin.LastGradNorm());
            foreach (var ((name, a), (_, w)) in after.Parameters.Zip(within.Parameters))
            {
                Assert.True(a.ToArray().SequenceEqual(w.ToArray()), $"seed {seed} step {step} clip {maxGradNorm}: {name} differs");
            }
        }
    }

    [Fact]
    public void ArgumentsAreChecked()
    {
        using var p = Tensor.FromArray(Device, "p", [1f, 2f], 2);
        using var g = Tensor.FromArray(Device, "g", [1f, 2f, 3f], 3);
        using var opt = new AdamW([new OptimizerParameter("p", p, true)]);
        var e = Assert.Throws<ArgumentException>(() => opt.Step([g]));
        Assert.Contains("(2)", e.Message);
        Assert.Throws<ArgumentException>(() => opt.Step([]));
        Assert.Throws<ArgumentOutOfRangeException>(() => opt.Step([p], maxGradNorm: 0));
        Assert.Throws<ArgumentOutOfRangeException>(() => opt.StepWhenFormed(-1f));   // refused before any backward
        Assert.Equal(0, opt.StepCount);   // nothing above stepped
        var wrongShape = opt.StepWhenFormed(1f);
        using var s = Device.BeginStream();
        e = Assert.Throws<ArgumentException>(() => wrongShape.Recorded(0, [("p", g)], s));
        Assert.Contains("(2)", e.Message);
        Assert.False(wrongShape.Stepped);
        Assert.Throws<ArgumentOutOfRangeException>(() => new AdamW([new OptimizerParameter("p", p, true)], betas: (1.0, 0.9)));
    }

    [Fact]
    public void WarmupThenCosine()
    {
        var s = new LearningRateSchedule(Peak: 1e-3f, WarmupSteps: 10, TotalSteps: 110, Floor: 1e-5f);
        Assert.Equal(1e-4f, s.At(0), 1e-9f);
        Assert.Equal(1e-3f, s.At(9), 1e-9f);
        Assert.Equal(1e-3f, s.At(10), 1e-9f);
        Assert.Equal(1e-5f + (1e-3f - 1e-5f) * 0.5f, s.At(60), 1e-8f);
        Assert.Equal(1e-5f, s.At(110), 1e-9f);
        Assert.Equal(1e-5f, s.At(500), 1e-9f);
        Assert.Throws<ArgumentOutOfRangeException>(() => s.At(-1));
    }
}
