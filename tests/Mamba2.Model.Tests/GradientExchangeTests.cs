using Mamba2.Model.Distributed;
using Mamba2.Model.Modules;
using Mamba2.Model.Tensors;
using Mamba2.Model.Training;
using Mamba2.Tests;
using Mamba2.Vulkan;
using Xunit;

namespace Mamba2.Model.Tests;

/// <summary>
/// The gradient exchange's device path in-process, with validation on: alone, the sum over the ranks is the rank's
/// own weighted gradient, so every gradient must come back exactly weighted (the 2-rank arithmetic is DataParallelTests').
/// </summary>
public sealed class GradientExchangeTests(GpuFixture gpu)
{
    private GpuDevice Device => gpu.Device;

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void AloneEveryGradientComesBackTimesItsWeight(bool lookupApart)
    {
        var config = new Mamba2LMConfig(VocabSize: 11, NLayer: 2, new Mamba2Config(DModel: 16) { DState = 8, HeadDim = 8, ChunkSize = 16 });
        using var lm = Mamba2LM.Initialize(Device, config, new Random(TestMath.NewSeed()));
        using var input = IndexTensor.FromArray(Device, "input_ids", [.. Enumerable.Range(0, 2 * 19).Select(i => i * 3 % 11)], 2, 19);
        using var targets = Mamba2LM.NextTokenTargets(input);
        // Apart: the tied embedding's head part summed with the first stage, the lookup's touched rows with the last.
        using var exchange = new GradientExchange(Communicator.Alone, lm.Parameters, lookupApart ? Mamba2LM.EmbeddingsName : null);
        for (var step = 0; step < 2; step++)   // the buffer reused
        {
            var weight = step == 0 ? 0.375f : 1f;
            Dictionary<string, float[]> plain;
            using (var acts = lm.ForwardLoss(input, targets))
            {
                var g = lm.Backward(acts);
                plain = g.ToDictionary(q => q.Key, q => q.Value.ToArray());
                g.Values.ToList().ForEach(t => t.Dispose());
            }

            using var again = lm.ForwardLoss(input, targets);
            exchange.Begin(weight, lookupApart ? input.Values : default);
            Assert.Equal(lookupApart, exchange.TakesLookupApart);
            var grads = lm.Backward(again, exchange);
            try
            {
                exchange.Finish(grads);
                Assert.Equal(plain.Keys.Order(), grads.Keys.Order());
                foreach (var (name, g) in grads)
                {
                    var expected = plain[name].Select(v => v * weight).ToArray();
                    if (lookupApart && name == Mamba2LM.EmbeddingsName)
                    {
                        // head w + lookup w against (head + lookup) w: one rounding apart
                        var got = g.ToArray();
                        Assert.All(expected.Zip(got), e => Assert.True(Math.Abs(e.First - e.Second) <= 1e-6f * Math.Max(1f, Math.Abs(e.First)), $"{name}: {e.Second} against {e.First}"));
                        Assert.Contains(got, v => v != 0f);
                    }
                    else
                    {
                        Assert.Equal(expected, g.ToArray());
                    }
                }
            }
            finally
            {
                grads.Values.ToList().ForEach(t => t.Dispose());
            }
        }
    }
}
