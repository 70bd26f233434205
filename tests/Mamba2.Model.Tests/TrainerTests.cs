using Mamba2.Model.Checkpoints;
using Mamba2.Model.Modules;
using Mamba2.Model.Ops;
using Mamba2.Model.Tensors;
using Mamba2.Model.Training;
using Mamba2.Model.Training.Tasks;
using Mamba2.Tests;
using Mamba2.Vulkan;
using Xunit;

namespace Mamba2.Model.Tests;

public sealed class TrainerTests(GpuFixture gpu) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("mamba2-train-").FullName;

    private GpuDevice Device => gpu.Device;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static Mamba2LMConfig Tiny(int vocab, bool causal = true) =>
        new(vocab, NLayer: 2, new Mamba2Config(DModel: 16) { DState = 8, HeadDim = 8, ChunkSize = 16, Causal = causal });

    private static readonly TrainerOptions Options = new() { Batch = 4, Steps = 40, LearningRate = 3e-3f, WarmupSteps = 3, Seed = 11, EvalBatches = 2 };

    [Theory]
    [InlineData(Precision.Fp32, true)]
    [InlineData(Precision.Fp32Fast, true)]
    [InlineData(Precision.Bf16, true)]
    [InlineData(Precision.Fp32, false)]   // a bidirectional model resumes bidirectional (config.json's "causal": false)
    public void ResumingContinuesExactly(Precision precision, bool causal)
    {
        if (!PrecisionAvailability.Runs(Device, precision))
        {
            return;
        }

        var task = new SelectiveCopyTask(seqLen: 24, tokens: 4, vocab: 10);
        var uninterrupted = new List<double>();
        Trainer New()
        {
            var model = Mamba2LM.Initialize(Device, Tiny(10, causal), new Random(5));
            model.Precision = precision;
            return new Trainer(model, task, Options);
        }

        using (var trainer = New())
        {
            for (var i = 0; i < 5; i++)
            {
                uninterrupted.Add(trainer.TrainStep().Loss);
            }
        }

        var resumed = new List<double>();
        var checkpoint = Path.Combine(_dir, "step-3");
        using (var trainer = New())
        {
            for (var i = 0; i < 3; i++)
            {
                resumed.Add(trainer.TrainStep().Loss);
            }

            trainer.Save(checkpoint);
        }

        using (var trainer = Trainer.Resume(Device, checkpoint, task, Options))
        {
            Assert.Equal(precision, trainer.Model.Precision);   // the checkpoint's mode, not the model's default
            Assert.Equal(3, trainer.Step);
            Assert.Equal(causal, trainer.Model.Config.Mixer.Causal);
            for (var i = 0; i < 2; i++)
            {
                resumed.Add(trainer.TrainStep().Loss);
            }
        }

        Assert.Equal(uninterrupted, resumed);   // bit for bit
    }

    [Fact]
    public void ResumeTakesTheSavedModeOrTheOneGivenAndOlderCheckpointsResumeInFp32()
    {
        var task = new SelectiveCopyTask(seqLen: 24, tokens: 4, vocab: 10);
        var checkpoint = Path.Combine(_dir, "step-1");
        using (var trainer = new Trainer(Mamba2LM.Initialize(Device, Tiny(10), new Random(4)), task, Options))
        {
            trainer.TrainStep();
            trainer.Save(checkpoint);
        }

        var statePath = Path.Combine(checkpoint, Trainer.StateFile);
        var state = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(statePath))!.AsObject();
        Assert.Equal("fp32", (string?)state["Precision"]);
        Assert.False((bool)state["Bf16Activations"]!);
        void Write() => File.WriteAllText(statePath, state.ToJsonString());

        // A checkpoint saved before the mode was recorded.
        state.Remove("Precision");
        state.Remove("Bf16Activations");
        Write();
        using (var trainer = Trainer.Resume(Device, checkpoint, task, Options))
        {
            Assert.Equal(Precision.Fp32, trainer.Model.Precision);
            Assert.Equal(1, trainer.Step);
        }

        var modes = Enum.GetValues<Precision>();
        foreach (var other in modes.Where(q => q != Precision.Fp32 && PrecisionPolicy.WhyNot(Device, q) is null).Take(1))
        {
            using var trainer = Trainer.Resume(Device, checkpoint, task, Options, precision: other);
            Assert.Equal(other, trainer.Model.Precision);
        }

        // Saved in a mode this device lacks: refused, unless another is given.
        foreach (var cannot in modes.Where(q => PrecisionPolicy.WhyNot(Device, q) is not null).Take(1))
        {
            state["Precision"] = cannot.Name();
            Write();
            var e = Assert.Throws<MissingFeatureException>(() => Trainer.Resume(Device, checkpoint, task, Options));
            Assert.Contains($"was trained in {cannot.Name()}: {PrecisionPolicy.WhyNot(Device, cannot)}; pass the precision", e.Message, StringComparison.Ordinal);
            using var trainer = Trainer.Resume(Device, checkpoint, task, Options, precision: Precision.Fp32);
            Assert.Equal(Precision.Fp32, trainer.Model.Precision);
        }

        // bf16 activations come back with bf16, and stay off in another mode.
        if (PrecisionPolicy.WhyNot(Device, Precision.Bf16) is null && Device.Capabilities.Storage16Bit)
        {
            var bf16 = Path.Combine(_dir, "bf16", "step-1");
            using (var trainer = new Trainer(Mamba2LM.Initialize(Device, Tiny(10), new Random(4)), task, Options))
            {
                trainer.Model.Precision = Precision.Bf16;
                trainer.Model.StoreActivationsAsBf16 = true;
                trainer.TrainStep();
                trainer.Save(bf16);
            }

            using (var trainer = Trainer.Resume(Device, bf16, task, Options))
            {
                Assert.Equal(Precision.Bf16, trainer.Model.Precision);
                Assert.True(trainer.Model.StoreActivationsAsBf16);
            }

            using (var trainer = Trainer.Resume(Device, bf16, task, Options, precision: Precision.Fp32))
            {
                Assert.False(trainer.Model.StoreActivationsAsBf16);
            }
        }

        state["Precision"] = "fp8";
        Write();
        var bad = Assert.Throws<InvalidDataException>(() => Trainer.Resume(Device, checkpoint, task, Options));
        Assert.Contains("precision 'fp8' is not fp32, fp32-fast or bf16", bad.Message, StringComparison.Ordinal);
    }

    [Fact]
    public void TrainingLowersTheLoss()
    {
        var task = new AssociativeRecallTask(pairs: 4, keys: 8, values: 8);
        using var trainer = new Trainer(Mamba2LM.Initialize(Device, Tiny(task.VocabSize), new Random(2)), task, Options with { Batch = 8, LearningRate = 1e-2f });
        var before = trainer.Evaluate().Loss;
        for (var i = 0; i < 30; i++)
        {
            trainer.TrainStep();
        }

        var after = trainer.Evaluate().Loss;
        Assert.True(after < 0.8 * before, $"eval loss {before:F3} -> {after:F3} after 30 steps");
    }

    [Fact]
    public void ANonFiniteWeightIsNotSaved()
    {
        var task = new SelectiveCopyTask(seqLen: 24, tokens: 4, vocab: 10);
        using var trainer = new Trainer(Mamba2LM.Initialize(Device, Tiny(10), new Random(3)), task, Options);
        trainer.TrainStep();
        var good = Path.Combine(_dir, "step-1");
        trainer.Save(good);

        // One weight poisoned as a diverged update leaves it: Save refuses, naming it, and writes nothing.
        trainer.TrainStep();
        var (name, tensor) = trainer.Model.Parameters.First(q => q.Name.EndsWith("out_proj.weight", StringComparison.Ordinal));
        var values = tensor.ToArray();
        values[5] = float.PositiveInfinity;
        tensor.CopyFrom(values);
        var bad = Path.Combine(_dir, "step-2");
        var e = Assert.Throws<TrainingDivergedException>(() => trainer.Save(bad));
        Assert.Equal(2, e.Step);
        Assert.Contains($"{name}[5] is Infinity", e.Message, StringComparison.Ordinal);
        Assert.False(Directory.Exists(bad));
        Assert.Empty(Directory.GetDirectories(_dir, "step-2*"));
        Assert.True(File.Exists(Path.Combine(good, Trainer.OptimizerFile)));
    }

    [Theory]
    [InlineData(Precision.Fp32)]
    [InlineData(Precision.Bf16)]
    public void OutOfMemoryInATrainingStepLeaksNothingAndTheRunGoesOn(Precision precision)
    {
        // A private device: the shared one's counters see the tests that run beside this one.
        using var device = GpuDevice.Create(GpuFixture.Options);
        if (!PrecisionAvailability.Runs(device, precision))
        {
            return;
        }

        Mamba2LM Model()
        {
            var model = Mamba2LM.Initialize(device, Tiny(10), new Random(5));
            model.Precision = precision;
            return model;
        }

        var task = new SelectiveCopyTask(seqLen: 24, tokens: 4, vocab: 10);
        // The device's staging buffers (made at its first upload and download where memory is device-only, as on a
        // discrete GPU) live as long as the device: made here, before what must be given back is counted.
        using (var warm = Tensor.FromArray(device, "warm", [1f], 1))
        {
            Assert.Equal(1f, warm.ToArray()[0]);
        }

        var empty = device.Memory.AllocatedBytes;
        var losses = new List<double>();
        using (var reference = new Trainer(Model(), task, Options))
        {
            for (var i = 0; i < 4; i++)
            {
                losses.Add(reference.TrainStep().Loss);
            }
        }

        Assert.Equal(empty, device.Memory.AllocatedBytes);
        using (var trainer = new Trainer(Model(), task, Options))
        {
            Assert.Equal(losses[0], trainer.TrainStep().Loss);
            trainer.TrainStep();
            var held = device.Memory.AllocatedBytes;   // the model, the moments, and the step still running on

            // Out of memory at allocations spread over a step (the sweep's counting run is the third): the step fails,
            // holds nothing more, and changes nothing.
            OutOfMemorySweep.Run(device, () => trainer.TrainStep(), failed =>
            {
                Assert.True(device.Memory.AllocatedBytes <= held, $"{failed}: {device.Memory.AllocatedBytes - held} bytes more live");
                Assert.Equal(3, trainer.Step);
            });

            Assert.Equal(losses[3], trainer.TrainStep().Loss);
        }

        Assert.Equal(empty, device.Memory.AllocatedBytes);
        Assert.Empty(device.ValidationLog.Drain());
    }

    [Fact]
    public void OutOfMemoryWhileMakingOrLoadingAModelOrTrainerLeaksNothing()
    {
        // A private device: the shared one's counters see the tests that run beside this one.
        using var device = GpuDevice.Create(GpuFixture.Options);
        var task = new SelectiveCopyTask(seqLen: 24, tokens: 4, vocab: 10);
        Mamba2LM Model() => Mamba2LM.Initialize(device, Tiny(10), new Random(5));
        var checkpoint = Path.Combine(_dir, "step-1");
        using (var trainer = new Trainer(Model(), task, Options))
        {
            trainer.TrainStep();
            trainer.Save(checkpoint);
        }

        var empty = device.Memory.AllocatedBytes;
        void Sweep(string what, Action call) => OutOfMemorySweep.Run(device, call, failed =>
            Assert.True(device.Memory.AllocatedBytes == empty, $"{what}, {failed}: {device.Memory.AllocatedBytes - empty} bytes left live"));

        Sweep("a new model", () => Model().Dispose());
        Sweep("a loaded model", () => Mamba2Checkpoint.Load(device, checkpoint).Dispose());
        Sweep("a new trainer's first step", () =>
        {
            using var trainer = new Trainer(Model(), task, Options);
            trainer.TrainStep();
        });
        Sweep("a resumed trainer's first step", () =>
        {
            using var trainer = Trainer.Resume(device, checkpoint, task, Options);
            trainer.TrainStep();
        });
        Assert.Empty(device.ValidationLog.Drain());
    }

    [Fact]
    public void FirstNonFiniteFindsEveryKindAnywhere()
    {
        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        foreach (var length in new[] { 0, 1, 7, 8, 9, 31, 257, 1000 })
        {
            var values = TestMath.Uniform(rng, length, -3e38, 3e38);   // finite, however large
            Assert.True(Trainer.FirstNonFinite(values) is null, $"seed {seed}, length {length}");
            foreach (var bad in new[] { float.NaN, float.PositiveInfinity, float.NegativeInfinity })
            {
                foreach (var at in new[] { 0, length / 2, length - 1 }.Where(a => a >= 0 && a < length).Distinct())
                {
                    var copy = (float[])values.Clone();
                    copy[at] = bad;
                    copy[Math.Min(length - 1, at + 1)] = bad;   // a second one after it: the first is named
                    Assert.True(Trainer.FirstNonFinite(copy) == at, $"seed {seed}, length {length}, {bad} at {at}");
                }
            }
        }
    }

    [Fact]
    public void TasksAreDeterministicAndWellFormed()
    {
        TrainingTask[] tasks = [new SelectiveCopyTask(), new AssociativeRecallTask(), new ReverseTask()];
        foreach (var task in tasks)
        {
            var a = task.Batch(3, 7, 1);
            Assert.Equal(a.Inputs, task.Batch(3, 7, 1).Inputs);
            Assert.NotEqual(a.Inputs, task.Batch(3, 8, 1).Inputs);
            Assert.All(a.Inputs, t => Assert.InRange(t, 0, task.VocabSize - 1));
            Assert.All(a.Targets.Where(t => t != TrainingTask.Ignore), t => Assert.InRange(t, 0, task.VocabSize - 1));
        }

        var copy = new SelectiveCopyTask(seqLen: 20, tokens: 5, vocab: 12).Batch(1, 0, 3);
        Assert.Equal(5, copy.Targets.Count(t => t != TrainingTask.Ignore));
        Assert.Equal(11, copy.Inputs[14]);   // the separator before the answer
        Assert.Equal(copy.Inputs[15..20], copy.Targets[14..19]);
        var reverse = new ReverseTask(seqLen: 6).Batch(1, 0, 3);
        Assert.Equal(reverse.Inputs.Reverse(), reverse.Targets);
        Assert.True(new ReverseTask().NeedsBidirectional);

        var text = Path.Combine(_dir, "corpus.txt");
        File.WriteAllText(text, string.Concat(Enumerable.Repeat("the quick brown fox ", 20)));
        var t = new TextTask(text, seqLen: 16).Batch(2, 0, 1);
        Assert.Equal(t.Inputs[1..16], t.Targets[0..15]);
        Assert.Throws<ArgumentException>(() => new TextTask(text, seqLen: 1000));

        // The smallest selective copy that fits: the tokens, as many noise slots, the separator.
        Assert.Equal(9, new SelectiveCopyTask(seqLen: 9, tokens: 4, vocab: 3).Batch(1, 0, 0).Inputs.Length);
        Assert.Contains("seqlen >= 2 tokens + 1 = 9 (got 8)", Assert.Throws<ArgumentException>(() => new SelectiveCopyTask(seqLen: 8, tokens: 4)).Message);
        Assert.Contains("vocab >= 3", Assert.Throws<ArgumentException>(() => new SelectiveCopyTask(vocab: 2)).Message);
        Assert.Contains("tokens >= 1", Assert.Throws<ArgumentException>(() => new SelectiveCopyTask(tokens: 0)).Message);
        Assert.Contains("vocab >= 2", Assert.Throws<ArgumentException>(() => new ReverseTask(vocab: 1)).Message);
    }
}
