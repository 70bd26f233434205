using Mamba2.Model.Generation;
using Mamba2.Model.Modules;
using Mamba2.Model.Tensors;
using Mamba2.Tests;
using Mamba2.Vulkan;
using Xunit;

namespace Mamba2.Model.Tests;

public class GenerationTests(GpuFixture gpu)
{
    private GpuDevice Device => gpu.Device;

    private static Mamba2LMConfig Tiny => new(VocabSize: 17, NLayer: 2, new Mamba2Config(DModel: 16) { DState = 8, HeadDim = 8, NGroups = 2, ChunkSize = 16 });

    [Fact]
    public void OutOfMemoryWhileGeneratingLeaksNothing()
    {
        // A private device: the shared one's counters see the tests that run beside this one.
        using var device = GpuDevice.Create(GpuFixture.Options);
        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        using var lm = Mamba2LM.Initialize(device, Tiny, rng);
        int[] prompt = [.. Enumerable.Range(0, 23).Select(_ => rng.Next(Tiny.VocabSize))];
        var sampling = new SamplingOptions(Temperature: 0.8f, Seed: 3);
        Generator.Generate(lm, prompt, 6, sampling);   // what the model keeps after its first use
        var before = device.Memory.AllocatedBytes;
        var expected = Generator.Generate(lm, prompt, 6, sampling);
        OutOfMemorySweep.Run(device, () => Generator.Generate(lm, prompt, 6, sampling), failed =>
            Assert.True(device.Memory.AllocatedBytes == before, $"seed {seed}, {failed}: {device.Memory.AllocatedBytes - before} bytes left live"));

        // From scratch: an empty state for two sequences, then a step.
        OutOfMemorySweep.Run(device, () =>
        {
            using var state = lm.NewState(2);
            using var token = IndexTensor.FromArray(device, "token", [1, 2], 2);
            lm.Step(token, state).Dispose();
        }, failed => Assert.True(device.Memory.AllocatedBytes == before, $"seed {seed}, from scratch, {failed}: {device.Memory.AllocatedBytes - before} bytes left live"));

        Assert.Equal(expected, Generator.Generate(lm, prompt, 6, sampling));
        Assert.Empty(device.ValidationLog.Drain());
    }

    [Fact]
    public void StepsFromScratchAndAfterPrefillEqualTheFullForwardAtEveryPosition()
    {
        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        using var lm = Mamba2LM.Initialize(Device, Tiny, rng);
        const int b = 2, l = 21, prompt = 9;
        var v = Tiny.VocabSize;
        var ids = Enumerable.Range(0, b * l).Select(_ => rng.Next(v)).ToArray();
        using var all = IndexTensor.FromArray(Device, "input_ids", ids, b, l);
        using var acts = lm.Forward(all);
        var full = acts.Logits.ToArray();

        // From an empty state, one token at a time.
        var stepped = new float[full.Length];
        using (var state = lm.NewState(b))
        {
            for (var t = 0; t < l; t++)
            {
                using var token = IndexTensor.FromArray(Device, "token", [ids[t], ids[l + t]], b);
                using var logits = lm.Step(token, state);
                var row = logits.ToArray();
                for (var bi = 0; bi < b; bi++)
                {
                    Array.Copy(row, bi * v, stepped, (bi * l + t) * v, v);
                }
            }
        }

        TestMath.AssertClose(stepped, full.Select(x => (double)x).ToArray(), 1e-5, $"steps from scratch, seed {seed}");

        // The first tokens through the chunked forward, the rest by steps.
        var head = Enumerable.Range(0, b).SelectMany(bi => ids.Skip(bi * l).Take(prompt)).ToArray();
        using var promptIds = IndexTensor.FromArray(Device, "prompt", head, b, prompt);
        var (st, last) = lm.Prefill(promptIds);
        using (st)
        using (last)
        {
            var expect = Enumerable.Range(0, b).SelectMany(bi => full.Skip((bi * l + prompt - 1) * v).Take(v)).Select(x => (double)x).ToArray();
            TestMath.AssertClose(last.ToArray(), expect, 1e-5, $"prefill's last logits, seed {seed}");
            for (var t = prompt; t < l; t++)
            {
                using var token = IndexTensor.FromArray(Device, "token", [ids[t], ids[l + t]], b);
                using var logits = lm.Step(token, st);
                var want = Enumerable.Range(0, b).SelectMany(bi => full.Skip((bi * l + t) * v).Take(v)).Select(x => (double)x).ToArray();
                TestMath.AssertClose(logits.ToArray(), want, 1e-5, $"step {t} after a prefill of {prompt}, seed {seed}");
            }
        }
    }

    [Fact]
    public void GenerationIsGreedyByDefaultAndRepeatsWithASeed()
    {
        using var lm = Mamba2LM.Initialize(Device, Tiny, new Random(3));
        int[] prompt = [1, 2, 3];
        var greedy = Generator.Generate(lm, prompt, 6);
        Assert.Equal(6, greedy.Count);
        Assert.Equal(greedy, Generator.Generate(lm, prompt, 6, new SamplingOptions(TopK: 1, Temperature: 0.7f, Seed: 9)));
        var sampled = Generator.Generate(lm, prompt, 8, new SamplingOptions(Temperature: 1.5f, TopP: 0.9f, Seed: 42));
        Assert.Equal(sampled, Generator.Generate(lm, prompt, 8, new SamplingOptions(Temperature: 1.5f, TopP: 0.9f, Seed: 42)));
        Assert.All(sampled, t => Assert.InRange(t, 0, Tiny.VocabSize - 1));
        Assert.Empty(Generator.Generate(lm, prompt, 0));
    }

    [Fact]
    public void SamplerKeepsTopKAndTopP()
    {
        float[] logits = [0f, 5f, 4f, -3f, 4.5f];
        var s = new Sampler(new SamplingOptions(Temperature: 1f, TopK: 2, Seed: 1));
        var seen = Enumerable.Range(0, 200).Select(_ => s.Next(logits)).Distinct().Order().ToArray();
        Assert.Equal([1, 4], seen);
        var p = new Sampler(new SamplingOptions(Temperature: 1f, TopP: 0.01f, Seed: 1));
        Assert.All(Enumerable.Range(0, 50), _ => Assert.Equal(1, p.Next(logits)));
        Assert.Equal(1, new Sampler(new SamplingOptions()).Next(logits));
    }

    [Fact]
    public void RepetitionPenaltyIsHfsAndEndOfTextStops()
    {
        // HF's RepetitionPenaltyLogitsProcessor: seen ids' logits divided by the penalty where positive, multiplied where not.
        float[] logits = [2f, -1f, 0.5f, 1.9f];
        Assert.Equal(0, new Sampler(new SamplingOptions(RepetitionPenalty: 2f)).Next(logits, [1]));      // 2 still leads
        Assert.Equal(3, new Sampler(new SamplingOptions(RepetitionPenalty: 2f)).Next(logits, [0, 0]));   // 1 < 1.9
        Assert.Equal(2, new Sampler(new SamplingOptions(RepetitionPenalty: 5f)).Next(logits, [0, 3, 1]));   // 0.4, -5, 0.5, 0.38
        Assert.Equal(0, new Sampler(new SamplingOptions()).Next(logits, [0]));                           // 1: off

        using var lm = Mamba2LM.Initialize(Device, Tiny, new Random(TestMath.NewSeed()));
        var free = Generator.Generate(lm, [1, 2, 3], 8);
        var seen = new List<int>();
        var stopped = Generator.Generate(lm, [1, 2, 3], 8, eosId: free[2], onToken: seen.Add);
        var first = free.ToList().IndexOf(free[2]);
        Assert.Equal(free.Take(first + 1), stopped);   // up to and including the first end-of-text token
        Assert.Equal(stopped, seen);                   // streamed as drawn
    }

    [Fact]
    public void ByteTokenizerRoundTripsUtf8()
    {
        const string text = "Mamba-2 on any GPU: ü, 漢字";
        var ids = ByteTokenizer.Instance.Encode(text);
        Assert.All(ids, i => Assert.InRange(i, 0, 255));
        Assert.Equal(text, ByteTokenizer.Instance.Decode(ids));
    }

    [Fact]
    public void BidirectionalLayersCannotGenerate()
    {
        var config = Tiny with { Mixer = Tiny.Mixer with { Causal = false } };
        using var lm = Mamba2LM.Initialize(Device, config, new Random(1));
        Assert.Throws<NotSupportedException>(() => lm.NewState(1));
    }
}
