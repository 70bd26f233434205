using System.Text.RegularExpressions;
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

/// <summary>Checkpoints saved with bf16 or f16 weights for inference, through the API and `mamba2 export`.</summary>
public sealed class ExportTests(GpuFixture gpu) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("mamba2-export-").FullName;

    private GpuDevice Device => gpu.Device;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>Two groups, the gated norm over all of d_inner as transformers has it: a model HF's layout describes.</summary>
    private static Mamba2LMConfig Tiny => new(VocabSize: 13, NLayer: 2, new Mamba2Config(DModel: 16) { DState = 8, HeadDim = 8, NGroups = 2, ChunkSize = 16, NormPerGroup = false });

    /// <summary>The same with mamba_ssm's per-group norm: only its layout describes it.</summary>
    private static Mamba2LMConfig TinyMambaSsm => Tiny with { Mixer = Tiny.Mixer with { NormPerGroup = true } };

    /// <summary>config.json's torch_dtype (read as text: the file holds a bare Infinity, as transformers writes it).</summary>
    private static string TorchDtype(string dir) =>
        Regex.Match(File.ReadAllText(Path.Combine(dir, Mamba2Checkpoint.ConfigFile)), "\"torch_dtype\": \"(\\w+)\"").Groups[1].Value;

    // The logits' tolerance bounds what rounding every weight does to a random tiny model, not an op's error: over 96
    // seeds bf16 gave a median 4.9e-3 and at most 9.0e-3, f16 6.3e-4 and at most 1.7e-3: too near 1e-2 and 2e-3 for
    // CI's five passes with fresh seeds. The stored values themselves are checked exactly.
    [Theory]
    [InlineData(SafetensorsDType.BF16, "bfloat16", 3e-2)]
    [InlineData(SafetensorsDType.F16, "float16", 6e-3)]
    [InlineData(SafetensorsDType.F32, "float32", 0)]
    public void SavedWeightsAreTheRoundedMastersAndGiveTheSameLogitsWithinTheirPrecision(SafetensorsDType dtype, string torchDtype, double tolerance)
    {
        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        using var lm = Mamba2LM.Initialize(Device, Tiny, rng);
        var dir = Path.Combine(_dir, torchDtype);
        Mamba2Checkpoint.Save(lm, dir, dtype);
        Assert.Equal(torchDtype, TorchDtype(dir));
        var stored = SafetensorsFile.ReadAll(Path.Combine(dir, Mamba2Checkpoint.WeightsFile));
        Assert.All(stored.Values, t => Assert.Equal(dtype, t.DType));
        Assert.Equal(lm.Parameters.Count + 1, stored.Count);   // and the tied lm_head.weight

        // Every stored value is its fp32 master rounded once (to nearest even).
        foreach (var (name, value) in lm.Parameters)
        {
            var master = value.ToArray();
            var expected = HostTensor.FromFloat32(name, master, [.. value.Shape]).Convert(dtype).ToFloat32();
            Assert.Equal(expected, stored[name].ToFloat32());
        }

        Assert.Equal(stored["backbone.embeddings.weight"].ToFloat32(), stored["lm_head.weight"].ToFloat32());
        int[] ids = [1, 5, 12, 0, 7, 7, 3, 9, 2];
        using var input = IndexTensor.FromArray(Device, "input_ids", ids, 1, ids.Length);
        using var loaded = Mamba2Checkpoint.Load(Device, dir);
        using var a = lm.Forward(input);
        using var b = loaded.Forward(input);
        var exact = a.Logits.ToArray().Select(v => (double)v).ToArray();
        var error = TestMath.RelativeError(b.Logits.ToArray(), exact);
        TestMath.RecordMargin(error, tolerance, $"{torchDtype} seed {seed}: logits");
        Assert.True(error <= tolerance, $"{torchDtype} seed {seed}: logits off by {error:E2}");
        Assert.True(dtype == SafetensorsDType.F32 ? error == 0 : error > 0, $"{torchDtype}: the weights were not rounded ({error})");
    }

    [Fact]
    public void ExportRewritesATrainingCheckpointAsBf16AndRefusesBadArguments()
    {
        var rng = new Random(TestMath.NewSeed());
        var source = Path.Combine(_dir, "run", "step-3");
        using (var lm = Mamba2LM.Initialize(Device, Tiny, rng))
        {
            Mamba2Checkpoint.Save(lm, source);
        }

        File.WriteAllText(Path.Combine(source, "trainer.json"), "{}");   // a run's extra files are left behind
        var target = Path.Combine(_dir, "bf16");
        Assert.Equal(0, CliApp.Run(["export", "--model", source, "--out", target]));
        Assert.Equal("bfloat16", TorchDtype(target));
        Assert.Equal([Mamba2Checkpoint.ConfigFile, Mamba2Checkpoint.WeightsFile], Directory.GetFiles(target).Select(Path.GetFileName).Order());
        Assert.Empty(Directory.GetDirectories(_dir, "bf16.tmp-*"));   // no temporary left

        Assert.Equal(2, CliApp.Run(["export", "--model", source, "--out", target]));   // exists
        Assert.Equal(0, CliApp.Run(["export", "--model", source, "--out", target, "--overwrite", "--dtype", "f32"]));
        Assert.Equal("float32", TorchDtype(target));
        Assert.Equal(2, CliApp.Run(["export", "--model", source, "--out", Path.Combine(_dir, "x"), "--dtype", "int8"]));
        Assert.Equal(2, CliApp.Run(["export", "--model", Path.Combine(_dir, "missing"), "--out", Path.Combine(_dir, "y")]));
        Assert.Equal(2, CliApp.Run(["export", "--model", source, "--out", source, "--overwrite"]));
        // --overwrite never deletes more than a checkpoint: not the run directory that holds --model, not other folders.
        var run = Path.Combine(_dir, "run");
        var (code, _, err) = CliCapture.Run("export", "--model", source, "--out", run, "--overwrite");
        Assert.Equal(2, code);
        Assert.Contains($"holds --model {source}", err, StringComparison.Ordinal);
        Assert.True(File.Exists(Path.Combine(source, "trainer.json")));
        var notes = Path.Combine(_dir, "notes");
        Directory.CreateDirectory(notes);
        File.WriteAllText(Path.Combine(notes, "todo.txt"), "keep me");
        (code, _, err) = CliCapture.Run("export", "--model", source, "--out", notes, "--overwrite");
        Assert.Equal(2, code);
        Assert.Contains("is not a model directory", err, StringComparison.Ordinal);
        Assert.True(File.Exists(Path.Combine(notes, "todo.txt")));
        var empty = Path.Combine(_dir, "empty");
        Directory.CreateDirectory(empty);
        Assert.Equal(0, CliApp.Run(["export", "--model", source, "--out", empty, "--overwrite"]));
        Assert.Equal(2, CliApp.Run(["export", "--model", source, "--out", Path.Combine(_dir, "no", "such", "parent")]));
        Assert.False(Directory.Exists(Path.Combine(_dir, "x")));
    }

    [Fact]
    public void MambaSsmLayoutIsTorchSaveOfItsNamesAndReadsBackTheSame()
    {
        var rng = new Random(TestMath.NewSeed());
        var dir = Path.Combine(_dir, "mamba-ssm");
        using var lm = Mamba2LM.Initialize(Device, TinyMambaSsm, rng);
        Mamba2Checkpoint.Save(lm, dir);   // the default for this model
        Assert.Equal([Mamba2Checkpoint.ConfigFile, "pytorch_model.bin"], Directory.GetFiles(dir).Select(Path.GetFileName).Order());

        // config.json holds MambaConfig's fields and no other (its from_pretrained passes them all as arguments).
        var config = System.Text.Json.Nodes.JsonNode.Parse(File.ReadAllText(Path.Combine(dir, Mamba2Checkpoint.ConfigFile)).Replace("Infinity", "1e999"))!.AsObject();
        Assert.Equal(["attn_cfg", "attn_layer_idx", "d_intermediate", "d_model", "fused_add_norm", "n_layer", "pad_vocab_size_multiple",
            "residual_in_fp32", "rms_norm", "ssm_cfg", "tie_embeddings", "vocab_size"], config.Select(p => p.Key).Order());
        Assert.Equal(2, (int)config["ssm_cfg"]!["ngroups"]!);

        using var torch = PyTorchCheckpoint.Open(Path.Combine(dir, "pytorch_model.bin"));
        Assert.Contains("backbone.embedding.weight", torch.Names);
        Assert.Contains("lm_head.weight", torch.Names);
        Assert.DoesNotContain("backbone.embeddings.weight", torch.Names);
        Assert.Equal(torch.Read("backbone.embedding.weight").ToFloat32(), torch.Read("lm_head.weight").ToFloat32());

        var (readConfig, values) = Mamba2Checkpoint.ReadValues(dir);
        Assert.Equal(lm.Config.Mixer, readConfig.Mixer);
        Assert.Equal(lm.Config.VocabSize, readConfig.VocabSize);
        foreach (var (name, value) in lm.Parameters)
        {
            Assert.Equal(value.ToArray(), values[name]);
        }

        // In bf16 through the CLI; HF's layout is refused for this model, before anything is written.
        var bf16 = Path.Combine(_dir, "mamba-ssm-bf16");
        Assert.Equal(0, CliApp.Run(["export", "--model", dir, "--out", bf16, "--layout", "mamba-ssm"]));
        using (var half = PyTorchCheckpoint.Open(Path.Combine(bf16, "pytorch_model.bin")))
        {
            Assert.Equal(SafetensorsDType.BF16, half.Read("backbone.layers.0.mixer.in_proj.weight").DType);
        }

        var (code, _, err) = CliCapture.Run("export", "--model", dir, "--out", Path.Combine(_dir, "hf"), "--layout", "hf");
        Assert.Equal(2, code);
        Assert.Contains("mamba_ssm layout", err);
        Assert.False(Directory.Exists(Path.Combine(_dir, "hf")));
        Assert.Equal(2, CliApp.Run(["export", "--model", dir, "--out", Path.Combine(_dir, "z"), "--layout", "onnx"]));
    }

    [Fact]
    public void LayoutsKeepWhatTheyCannotSayOrRefuse()
    {
        // A bidirectional model: HF layout with our "causal": false, read back bidirectional; mamba_ssm's has no such key.
        var bidirectional = Tiny with { Mixer = Tiny.Mixer with { Causal = false } };
        var values = Mamba2LM.ParameterShapes(bidirectional).ToDictionary(q => q.Name, q => new float[Tensors.ShapeOps.Elements(q.Shape, q.Name)]);
        var dir = Path.Combine(_dir, "bidirectional");
        Mamba2Checkpoint.Write(bidirectional, values, dir);
        Assert.False(Mamba2Checkpoint.ReadConfig(dir).Mixer.Causal);
        Assert.Contains("mamba_ssm", Assert.Throws<ArgumentException>(() => Mamba2Checkpoint.Write(bidirectional, values, dir, layout: CheckpointLayout.MambaSsm)).Message);

        // HF's layout means transformers' norm, mamba_ssm's its own: each reads back as written.
        Mamba2Checkpoint.Write(Tiny, values, dir);
        Assert.False(Mamba2Checkpoint.ReadConfig(dir).Mixer.NormPerGroup);
        Assert.Throws<ArgumentException>(() => Mamba2Checkpoint.Write(Tiny, values, dir, layout: CheckpointLayout.MambaSsm));
        Mamba2Checkpoint.Write(TinyMambaSsm, values, dir);
        Assert.True(Mamba2Checkpoint.ReadConfig(dir).Mixer.NormPerGroup);
        Assert.False(File.Exists(Path.Combine(dir, Mamba2Checkpoint.WeightsFile)));   // the earlier save's weights are gone
        Assert.Throws<ArgumentException>(() => Mamba2Checkpoint.Write(TinyMambaSsm, values, dir, layout: CheckpointLayout.Hf));
    }
}
