using System.Text.Json.Nodes;
using Mamba2.Model.Checkpoints;
using Mamba2.Model.Generation;
using Mamba2.Model.IO;
using Mamba2.Model.Modules;
using Mamba2.Model.Ops;
using Mamba2.Model.Tensors;
using Mamba2.Tests;
using Mamba2.Vulkan;
using Xunit;

namespace Mamba2.Model.Tests;

/// <summary>
/// Files made by the real libraries (tests/fixtures/torch/make.py, run with torch, transformers and tokenizers): one
/// tiny random Mamba2 saved as transformers saves it (safetensors, whole and sharded), as a torch.save'd state dict
/// in HF names, and in mamba_ssm's layout, with a BPE that the tokenizers library trained. Our logits must be
/// transformers' (mamba_ssm's for its layout), our ids the tokenizers library's.
/// </summary>
public sealed class RealCheckpointTests(GpuFixture gpu)
{
    private static readonly string Root = Path.Combine(AppContext.BaseDirectory, "fixtures", "torch");

    private GpuDevice Device => gpu.Device;

    private static Dictionary<string, HostTensor> Expected(string file = "expected.safetensors") => SafetensorsFile.ReadAll(Path.Combine(Root, file));

    public static TheoryData<string> Layouts() => ["hf", "hf-sharded", "hf-bin", "mamba-ssm-bin"];

    /// <summary>
    /// The reference's outputs for a layout: transformers' for HF's, mamba_ssm's semantics for its own (they differ
    /// at ngroups 2, the fixture's: mamba_ssm's gated RMSNorm is per group, transformers' over all of d_inner).
    /// </summary>
    private static (HostTensor Ids, HostTensor Logits, HostTensor Greedy) Reference(string layout)
    {
        var e = Expected();
        var suffix = layout == "mamba-ssm-bin" ? "_mamba_ssm" : "";
        return (e["input_ids"], e["logits" + suffix], e["greedy_ids" + suffix]);
    }

    [Theory]
    [MemberData(nameof(Layouts))]
    public void LogitsAreTheReferenceLibrarysLogits(string layout)
    {
        var (ids, logits, _) = Reference(layout);
        AssertLogits(Path.Combine(Root, layout), ids, logits);
    }

    [Fact]
    public void TheTwoLibrariesDifferOnTheFixture()
    {
        var e = Expected();
        var error = TestMath.RelativeError(e["logits"].ToFloat32(), [.. e["logits_mamba_ssm"].ToFloat32().Select(v => (double)v)]);
        Assert.True(error > 1e-2, $"the fixture does not tell the two norms apart ({error:E2})");
    }

    /// <summary>A checkpoint our `train --init-from hf` wrote, read back by transformers on the GPU host for its logits.</summary>
    [Fact]
    public void AFineTunedCheckpointsLogitsAreTransformersLogitsForIt()
    {
        var dir = Path.Combine(Root, "finetuned");
        var expected = SafetensorsFile.ReadAll(Path.Combine(dir, "transformers-logits.safetensors"));
        AssertLogits(dir, expected["input_ids"], expected["logits"]);
    }

    private void AssertLogits(string dir, HostTensor ids, HostTensor expected)
    {
        using var lm = Mamba2Checkpoint.Load(Device, dir);
        lm.Precision = Precision.Fp32;
        using var input = IndexTensor.FromArray(Device, "input_ids", [.. ids.ToInt64().Select(v => checked((int)v))], ids.Shape[0], ids.Shape[1]);
        using var acts = lm.Forward(input);
        Assert.Equal(expected.Shape, acts.Logits.Shape);
        var error = TestMath.RelativeError(acts.Logits.ToArray(), [.. expected.ToFloat32().Select(v => (double)v)]);
        TestMath.RecordMargin(error, 1e-5, $"{dir}: logits");
        Assert.True(error <= 1e-5, $"{dir}: relative error {error:E2} against the reference's logits");
    }

    [Fact]
    public void IdsAndTextAreTheTokenizersLibrarys()
    {
        var cases = JsonNode.Parse(File.ReadAllText(Path.Combine(Root, "tokenizer-expected.json")))!["cases"]!.AsArray();
        Assert.True(cases.Count >= 8);
        using var t = HfTokenizer.Load(Path.Combine(Root, "hf", HfTokenizer.FileName));
        foreach (var c in cases)
        {
            var text = (string)c!["text"]!;
            var ids = c["ids"]!.AsArray().Select(i => (int)i!).ToArray();
            Assert.Equal(ids, t.Encode(text));
            Assert.Equal((string)c["decoded"]!, t.Decode(ids));
        }
    }

    /// <summary>The command on each layout: the prompt's ids, then transformers' greedy continuation.</summary>
    [Theory]
    [MemberData(nameof(Layouts))]
    public void GenerateFromAPromptIsTheReferencesGreedyGenerate(string layout)
    {
        var prompt = Expected()["prompt_ids"].ToInt64().Select(v => (int)v).ToArray();
        var greedy = Reference(layout).Greedy.ToInt64().Select(v => (int)v).ToArray();
        var dir = Path.Combine(Root, layout);
        using (var t = HfTokenizer.ForModel(dir, out var fallback))
        {
            Assert.False(fallback);
            Assert.Equal(prompt, t.Encode("The capital of France is"));
        }

        var (code, text, err) = CliCapture.Run("generate", "--model", dir, "--prompt", "The capital of France is",
            "--max-new-tokens", greedy.Length.ToString(System.Globalization.CultureInfo.InvariantCulture), "--ignore-eos", "--precision", "fp32");
        Assert.True(code == 0, err);
        Assert.Equal(string.Join(",", greedy), text.Split('\n', StringSplitOptions.RemoveEmptyEntries)[^1].Trim());
    }
}
