using System.Globalization;
using Mamba2.Cli;
using Mamba2.Model.Checkpoints;
using Mamba2.Model.Generation;
using Mamba2.Model.Modules;
using Mamba2.Model.Tensors;
using Mamba2.Model.Training.Tasks;
using Mamba2.Tests;
using Mamba2.Vulkan;
using Xunit;

namespace Mamba2.Model.Tests;

/// <summary>`mamba2 train --task text --init-from DIR`: fine-tuning a saved model on text through its tokenizer.json.</summary>
public sealed class FineTuneCliTests(GpuFixture gpu) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("mamba2-finetune-").FullName;

    private GpuDevice Device => gpu.Device;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static List<double> TrainLosses(string csv) =>
        [.. File.ReadLines(csv).Skip(1).Where(l => l.StartsWith("train,", StringComparison.Ordinal)).Select(l => double.Parse(l.Split(',')[2], CultureInfo.InvariantCulture))];

    [Fact]
    public void StartsFromTheModelTokenizesWithItsTokenizerAndSavesWholeModels()
    {
        // A 266-token model beside the byte-level BPE fixture; the text uses its merges ("hello", " world").
        var model = Path.Combine(_dir, "model");
        var config = new Mamba2LMConfig(VocabSize: 266, NLayer: 1, new Mamba2Config(DModel: 16) { DState = 8, HeadDim = 8, ChunkSize = 16 });
        using (var lm = Mamba2LM.Initialize(Device, config, new Random(TestMath.NewSeed())))
        {
            Mamba2Checkpoint.Save(lm, model);
        }

        File.Copy(Path.Combine(AppContext.BaseDirectory, "fixtures", "tokenizer", "byte-bpe.json"), Path.Combine(model, HfTokenizer.FileName));
        var data = Path.Combine(_dir, "data.txt");
        File.WriteAllText(data, string.Concat(Enumerable.Range(0, 40).Select(i => $"hello world {i}, said the {i % 7} worlds.\n")));
        var run = Path.Combine(_dir, "run");
        string[] common = ["train", "--task", "text", "--data", data, "--steps", "4", "--batch", "2", "--seqlen", "16", "--eval-every", "2", "--save-every", "2", "--precision", "fp32"];
        Assert.Equal(0, CliApp.Run([.. common, "--init-from", model, "--out", run]));

        // The first step's loss is the saved model's own on the first batch of its tokenized text: it started from it.
        var losses = TrainLosses(Path.Combine(run, "metrics.csv"));
        using (var tokenizer = HfTokenizer.Load(Path.Combine(model, HfTokenizer.FileName)))
        using (var lm = Mamba2Checkpoint.Load(Device, model))
        {
            var task = TextTask.Tokenized(data, tokenizer, 266, 16);
            var batch = task.Batch(2, 0, seed: 0);
            Assert.Contains(259, batch.Inputs.Concat(task.Batch(2, 1, 0).Inputs));   // "hello" as one token: the tokenizer was used
            using var ids = IndexTensor.FromArray(Device, "input_ids", batch.Inputs, 2, 16);
            using var targets = IndexTensor.FromArray(Device, "targets", batch.Targets, 2, 16);
            using var acts = lm.ForwardLoss(ids, targets, gradients: false);
            Assert.Equal(acts.Loss!.Loss.ToArray()[0], losses[0], 5);
        }

        // Each checkpoint is a whole model: config, weights, the tokenizer; it loads with the model's vocabulary.
        var step = Path.Combine(run, "step-4");
        Assert.True(File.Exists(Path.Combine(step, HfTokenizer.FileName)));
        Assert.Equal(266, Mamba2Checkpoint.ReadConfig(step).VocabSize);
        var settings = File.ReadAllText(Path.Combine(run, "train.json"));   // the checkpoint's shape, not the task's defaults
        Assert.Contains("\"d_model\": 16", settings);
        Assert.Contains("\"n_layer\": 1", settings);
        Assert.Contains("\"d_state\": 8", settings);

        // Resumed from step 2 (its own tokenizer copy; --init-from's directory gone): the same losses.
        var part = Path.Combine(_dir, "part");
        Assert.Equal(0, CliApp.Run([.. common, "--init-from", model, "--out", part, "--stop-at", "2"]));
        Directory.Move(model, model + "-moved");
        Assert.Equal(0, CliApp.Run(["train", "--resume", Path.Combine(part, "step-2"), "--precision", "fp32"]));
        Assert.Equal(losses, TrainLosses(Path.Combine(part, "metrics.csv")));
    }

    [Fact]
    public void WrongCombinationsExitWithTwo()
    {
        var model = Path.Combine(_dir, "none");
        var data = Path.Combine(_dir, "d.txt");
        File.WriteAllText(data, new string('a', 100));
        Assert.Equal(CliApp.BadInput, CliApp.Run(["train", "--task", "text", "--data", data, "--init-from", model, "--out", Path.Combine(_dir, "a")]));
        Directory.CreateDirectory(model);
        Assert.Equal(CliApp.BadInput, CliApp.Run(["train", "--task", "selective-copy", "--init-from", model, "--out", Path.Combine(_dir, "b")]));
        Assert.Equal(CliApp.BadInput, CliApp.Run(["train", "--task", "text", "--data", data, "--init-from", model, "--d-model", "32", "--out", Path.Combine(_dir, "c")]));
        Assert.Equal(CliApp.BadInput, CliApp.Run(["train", "--task", "text", "--data", data, "--init-from", model, "--out", Path.Combine(_dir, "d")]));   // no config.json

        // A model inside the run directory that --overwrite would clear is refused before anything is removed.
        var inRun = Path.Combine(_dir, "run", "step-2");
        Directory.CreateDirectory(inRun);
        File.WriteAllText(Path.Combine(inRun, "config.json"), "{}");
        var (code, _, err) = CliCapture.Run("train", "--task", "text", "--data", data, "--init-from", inRun, "--out", Path.Combine(_dir, "run"), "--overwrite");
        Assert.Equal(CliApp.BadInput, code);
        Assert.Contains("is inside --out", err, StringComparison.Ordinal);
        Assert.True(File.Exists(Path.Combine(inRun, "config.json")));
    }
}
