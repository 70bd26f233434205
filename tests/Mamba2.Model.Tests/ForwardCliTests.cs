using Mamba2.Cli;
using Mamba2.Model.Checkpoints;
using Mamba2.Model.IO;
using Mamba2.Model.Modules;
using Mamba2.Model.Ops;
using Mamba2.Model.Tensors;
using Mamba2.Tests;
using Mamba2.Vulkan;
using Xunit;

namespace Mamba2.Model.Tests;

/// <summary>`mamba2 forward` end to end on a tiny HF-layout checkpoint the test writes.</summary>
public sealed class ForwardCliTests(GpuFixture gpu) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("mamba2-forward-cli-").FullName;

    private GpuDevice Device => gpu.Device;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void WritesLogitsLossAndEveryGradient()
    {
        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        var config = new Mamba2LMConfig(VocabSize: 13, NLayer: 2, new Mamba2Config(DModel: 16) { DState = 8, HeadDim = 8, NGroups = 2, ChunkSize = 16 });
        var model = Path.Combine(_dir, "model");
        using var lm = Mamba2LM.Initialize(Device, config, rng);
        Mamba2Checkpoint.Save(lm, model);
        long[] ids = [.. Enumerable.Range(0, 2 * 9).Select(_ => (long)rng.Next(13))];
        var input = Path.Combine(_dir, "in.safetensors");
        var output = Path.Combine(_dir, "out.safetensors");
        SafetensorsWriter.Write(input, [HostTensor.FromInt64("input_ids", ids, 2, 9)]);

        Assert.Equal(0, CliApp.Run(["forward", "--model", model, "--input", input, "--output", output, "--backward", "--precision", "fp32"]));   // as the library call below

        var result = SafetensorsFile.ReadAll(output);
        using var inputIds = IndexTensor.FromArray(Device, "input_ids", [.. ids.Select(v => (int)v)], 2, 9);
        using var acts = lm.Forward(inputIds);
        using var targets = Mamba2LM.NextTokenTargets(inputIds);
        using var ce = CrossEntropy.Forward(acts.Logits, targets);
        Assert.Equal([2, 9, 13], result["logits"].Shape);
        Assert.True(result["logits"].ToFloat32().AsSpan().SequenceEqual(acts.Logits.ToArray()));
        Assert.Equal(ce.Loss.ToArray()[0], result["loss"].ToFloat32()[0]);
        foreach (var (name, value) in lm.Parameters)
        {
            Assert.Equal(value.Shape, result["grad." + name].Shape);
        }

        Assert.Equal(2 + lm.Parameters.Count, result.Count);
    }

    [Fact]
    public void GeneratePrintsTheGreedyContinuation()
    {
        var config = new Mamba2LMConfig(VocabSize: 256, NLayer: 1, new Mamba2Config(DModel: 16) { DState = 8, HeadDim = 8, ChunkSize = 16 });
        var model = Path.Combine(_dir, "bytes");
        using var lm = Mamba2LM.Initialize(Device, config, new Random(7));
        Mamba2Checkpoint.Save(lm, model);
        var expected = string.Join(",", Mamba2.Model.Generation.Generator.Generate(lm, Mamba2.Model.Generation.ByteTokenizer.Instance.Encode("Hi"), 5));
        var (code, text, err) = CliCapture.Run("generate", "--model", model, "--prompt", "Hi", "--max-new-tokens", "5", "--precision", "fp32");
        Assert.Equal(0, code);
        Assert.Equal(expected, text.Split('\n')[^2].Trim());   // the streamed text, then the ids
        Assert.Contains("byte tokenizer", err);   // the model has no tokenizer.json, and the run says so
        (code, text, _) = CliCapture.Run("generate", "--model", model, "--prompt-ids", "72,105", "--max-new-tokens", "5", "--precision", "fp32");
        Assert.Equal(0, code);
        Assert.Equal(expected, text.Trim());
    }

    [Fact]
    public void GenerateUsesTheModelsTokenizerJson()
    {
        // The byte-level BPE fixture (266 tokens) beside a model of that vocabulary: the prompt is its two tokens.
        var config = new Mamba2LMConfig(VocabSize: 266, NLayer: 1, new Mamba2Config(DModel: 16) { DState = 8, HeadDim = 8, ChunkSize = 16 });
        var model = Path.Combine(_dir, "bpe");
        using var lm = Mamba2LM.Initialize(Device, config, new Random(3));
        Mamba2Checkpoint.Save(lm, model);
        File.Copy(Path.Combine(AppContext.BaseDirectory, "fixtures", "tokenizer", "byte-bpe.json"), Path.Combine(model, "tokenizer.json"));
        var expected = Mamba2.Model.Generation.Generator.Generate(lm, [259, 264], 6);   // "hello", "Ġworld"
        using var tokenizer = Mamba2.Model.Generation.HfTokenizer.Load(Path.Combine(model, "tokenizer.json"));
        var (code, text, err) = CliCapture.Run("generate", "--model", model, "--prompt", "hello world", "--max-new-tokens", "6", "--precision", "fp32");
        Assert.Equal(0, code);
        Assert.Equal($"{tokenizer.Decode(expected)}\n{string.Join(",", expected)}\n", text);   // streamed text, then the ids
        Assert.Contains("6 tokens after a prompt of 2", err);
        Assert.Equal(CliApp.BadInput, CliCapture.Run("generate", "--model", model, "--prompt-ids", "259,266").Code);   // outside the vocabulary
        foreach (var bad in new[] { new[] { "--eos-id", "-5" }, ["--eos-id", "266"], ["--temperature", "NaN"], ["--temperature", "Infinity"], ["--repetition-penalty", "Infinity"] })
        {
            var (badCode, _, badErr) = CliCapture.Run(["generate", "--model", model, "--prompt-ids", "259", .. bad]);
            Assert.True(badCode == CliApp.BadInput, $"{string.Join(' ', bad)}: exit {badCode}: {badErr}");
            Assert.Contains(bad[0], badErr);
        }

        // End of text: with the first drawn token as the EOS id, generation stops right after it.
        (code, text, err) = CliCapture.Run("generate", "--model", model, "--prompt", "hello world", "--max-new-tokens", "6", "--precision", "fp32",
            "--eos-id", expected[0].ToString(System.Globalization.CultureInfo.InvariantCulture));
        Assert.Equal(0, code);
        Assert.EndsWith($"\n{expected[0]}\n", text);
        Assert.Contains("stopped at end of text", err);

        // A prompts file: each line in turn, the same continuation as alone. And the repetition penalty as the library applies it.
        var prompts = Path.Combine(_dir, "prompts.txt");
        File.WriteAllText(prompts, "hello world\n\nhello world\n");
        (code, text, _) = CliCapture.Run("generate", "--model", model, "--prompts", prompts, "--max-new-tokens", "6", "--precision", "fp32");
        Assert.Equal(0, code);
        Assert.Equal(string.Concat(Enumerable.Repeat($"{tokenizer.Decode(expected)}\n{string.Join(",", expected)}\n", 2)), text);
        var penalized = Mamba2.Model.Generation.Generator.Generate(lm, [259, 264], 6, new Mamba2.Model.Generation.SamplingOptions(RepetitionPenalty: 1.5f));
        (code, text, _) = CliCapture.Run("generate", "--model", model, "--prompt", "hello world", "--max-new-tokens", "6", "--precision", "fp32", "--repetition-penalty", "1.5");
        Assert.Equal(0, code);
        Assert.EndsWith($"\n{string.Join(",", penalized)}\n", text);
    }

    [Fact]
    public void BadInputExitsWithTwo()
    {
        var input = Path.Combine(_dir, "in.safetensors");
        SafetensorsWriter.Write(input, [HostTensor.FromFloat32("input_ids", [1f, 2f], 1, 2)]);
        var stderr = new StringWriter();
        var previous = Console.Error;
        Console.SetError(stderr);
        try
        {
            Assert.Equal(CliApp.BadInput, CliApp.Run(["forward", "--model", _dir, "--input", input, "--output", Path.Combine(_dir, "o.safetensors")]));
            Assert.Contains("input_ids must be I64 or I32", stderr.ToString());
            Assert.Equal(CliApp.BadInput, CliApp.Run(["generate", "--model", _dir, "--prompt", "a", "--prompt-ids", "1"]));
            Assert.Contains("exactly one of --prompt", stderr.ToString());
        }
        finally
        {
            Console.SetError(previous);
        }
    }
}
