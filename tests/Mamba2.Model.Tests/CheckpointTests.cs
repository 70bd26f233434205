using Mamba2.Model.Checkpoints;
using Mamba2.Model.IO;
using Mamba2.Model.Modules;
using Mamba2.Model.Tensors;
using Mamba2.Tests;
using Mamba2.Vulkan;
using Xunit;

namespace Mamba2.Model.Tests;

public sealed class CheckpointTests(GpuFixture gpu) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("mamba2-ckpt-").FullName;

    private GpuDevice Device => gpu.Device;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>Two groups and transformers' gated norm over all of d_inner: what HF's layout describes.</summary>
    private static Mamba2LMConfig Tiny => new(VocabSize: 13, NLayer: 2, new Mamba2Config(DModel: 16) { DState = 8, HeadDim = 8, NGroups = 2, ChunkSize = 16, NormPerGroup = false });

    private float[] Logits(Mamba2LM lm, int[] ids)
    {
        using var input = IndexTensor.FromArray(Device, "input_ids", ids, 1, ids.Length);
        using var acts = lm.Forward(input);
        return acts.Logits.ToArray();
    }

    [Fact]
    public void SaveThenLoadGivesTheSameLogits()
    {
        var rng = new Random(TestMath.NewSeed());
        using var lm = Mamba2LM.Initialize(Device, Tiny, rng);
        int[] ids = [1, 5, 12, 0, 7, 7, 3];
        Mamba2Checkpoint.Save(lm, _dir);
        var json = File.ReadAllText(Path.Combine(_dir, Mamba2Checkpoint.ConfigFile));
        // Floats as transformers' config classes take them: 0.0, never 0 (an int is refused), and a bare Infinity.
        Assert.Matches("\"time_step_limit\": \\[\\s*0\\.0,\\s*Infinity\\s*\\]", json);
        Assert.Matches("\"time_step_floor\": 0\\.0001,", json);
        Assert.Matches("\"layer_norm_epsilon\": 1E-05,", json);
        using var loaded = Mamba2Checkpoint.Load(Device, _dir);
        Assert.Equal(Tiny.Mixer with { }, loaded.Config.Mixer);
        Assert.True(Logits(lm, ids).AsSpan().SequenceEqual(Logits(loaded, ids)));
        using var file = SafetensorsFile.Open(Path.Combine(_dir, Mamba2Checkpoint.WeightsFile));
        Assert.True(file.Contains("lm_head.weight"));
        Assert.True(file.Contains("backbone.layers.1.mixer.A_log"));
    }

    [Fact]
    public void LoadsPytorchModelBinAndShardedSafetensorsToTheSameLogits()
    {
        var rng = new Random(TestMath.NewSeed());
        using var lm = Mamba2LM.Initialize(Device, Tiny, rng);
        int[] ids = [1, 5, 12, 0, 7, 7, 3];
        var expected = Logits(lm, ids);
        Mamba2Checkpoint.Save(lm, _dir);
        var weights = Path.Combine(_dir, Mamba2Checkpoint.WeightsFile);
        var tensors = SafetensorsFile.ReadAll(weights);

        // pytorch_model.bin as torch.save lays out a state dict: a storage per tensor, the tied head sharing the embedding's.
        var p = new TorchPickle().Global("collections", "OrderedDict").Op(')').Op('R').Op('(');
        var storages = new List<(string, byte[])>();
        foreach (var (name, t) in tensors)
        {
            var key = name == "lm_head.weight" ? storages.FindIndex(q => q.Item1 == "emb").ToString() : storages.Count.ToString();
            int[] stride = [.. t.Shape.Select((_, i) => t.Shape.Skip(i + 1).Aggregate(1, (a, b) => a * b))];
            p.Str(name).Tensor("FloatStorage", name == "backbone.embeddings.weight" ? "emb" : key, (int)t.ElementCount, 0, t.Shape, stride);
            if (name != "lm_head.weight")
            {
                storages.Add((name == "backbone.embeddings.weight" ? "emb" : key, t.Data.ToArray()));
            }
        }

        File.Delete(weights);
        TorchPickle.WriteZip(Path.Combine(_dir, "pytorch_model.bin"), p.Op('u').Bytes, [.. storages]);
        using (var fromBin = Mamba2Checkpoint.Load(Device, _dir))
        {
            Assert.True(Logits(fromBin, ids).AsSpan().SequenceEqual(expected));
        }

        // model.safetensors.index.json over two shards (safetensors is read before a .bin beside it).
        var names = tensors.Keys.ToList();
        var half = names.Count / 2;
        SafetensorsWriter.Write(Path.Combine(_dir, "model-00001-of-00002.safetensors"), [.. names.Take(half).Select(n => tensors[n])]);
        SafetensorsWriter.Write(Path.Combine(_dir, "model-00002-of-00002.safetensors"), [.. names.Skip(half).Select(n => tensors[n])]);
        var map = string.Join(",", names.Select((n, i) => $"\"{n}\": \"model-0000{(i < half ? 1 : 2)}-of-00002.safetensors\""));
        File.WriteAllText(Path.Combine(_dir, "model.safetensors.index.json"), $"{{\"metadata\": {{}}, \"weight_map\": {{{map}}}}}");
        File.WriteAllBytes(Path.Combine(_dir, "pytorch_model.bin"), [1, 2, 3]);   // would fail if it were read
        using (var fromShards = Mamba2Checkpoint.Load(Device, _dir))
        {
            Assert.True(Logits(fromShards, ids).AsSpan().SequenceEqual(expected));
        }

        File.Delete(Path.Combine(_dir, "model-00002-of-00002.safetensors"));
        Assert.Contains("shard model-00002-of-00002.safetensors", Assert.Throws<FileNotFoundException>(() => Mamba2Checkpoint.Load(Device, _dir)).Message);
    }

    [Fact]
    public void LoadsHfConfigAsTransformersWritesItWithBf16Weights()
    {
        var rng = new Random(TestMath.NewSeed());
        using (var lm = Mamba2LM.Initialize(Device, Tiny, rng))
        {
            Mamba2Checkpoint.Save(lm, _dir);
        }

        // Rewrite the weights in BF16 and the config with transformers' extra keys and a bare Infinity.
        var weights = Path.Combine(_dir, Mamba2Checkpoint.WeightsFile);
        var bf16 = SafetensorsFile.ReadAll(weights).Values.Select(t => t.Convert(SafetensorsDType.BF16)).ToList();
        SafetensorsWriter.Write(weights, bf16);
        File.WriteAllText(Path.Combine(_dir, Mamba2Checkpoint.ConfigFile), """
            {
              "architectures": ["Mamba2ForCausalLM"], "model_type": "mamba2", "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,
              "vocab_size": 13, "hidden_size": 16, "state_size": 8, "num_hidden_layers": 2, "num_heads": 4, "head_dim": 8,
              "expand": 2, "n_groups": 2, "conv_kernel": 4, "chunk_size": 16, "layer_norm_epsilon": 1e-05, "use_bias": false,
              "use_conv_bias": true, "hidden_act": "silu", "initializer_range": 0.1, "residual_in_fp32": true, "rms_norm": true,
              "time_step_rank": 1, "time_step_min": 0.001, "time_step_max": 0.1, "time_step_floor": 0.0001,
              "time_step_limit": [0.0, Infinity], "rescale_prenorm_residual": false, "tie_word_embeddings": true, "use_cache": true
            }
            """);
        using var loaded = Mamba2Checkpoint.Load(Device, _dir);
        Assert.Equal(2, loaded.Config.EosTokenId);   // where generation stops; written back by Save
        Mamba2Checkpoint.Save(loaded, Path.Combine(_dir, "again"));
        Assert.Equal(2, Mamba2Checkpoint.ReadConfig(Path.Combine(_dir, "again")).EosTokenId);
        var expected = bf16.ToDictionary(t => t.Name, t => t.ToFloat32());
        foreach (var (name, value) in loaded.Parameters)
        {
            Assert.True(value.ToArray().AsSpan().SequenceEqual(expected[name]), name);
        }

        Assert.True(float.IsPositiveInfinity(loaded.Config.Mixer.DtLimit.Max));
    }

    [Fact]
    public void LoadsMambaSsmLayout()
    {
        var rng = new Random(TestMath.NewSeed());
        using var lm = Mamba2LM.Initialize(Device, Tiny with { Mixer = Tiny.Mixer with { NormPerGroup = true } }, rng);   // mamba_ssm's norm
        var tensors = lm.Parameters.Select(q => HostTensor.FromFloat32(q.Name == "backbone.embeddings.weight" ? "backbone.embedding.weight" : q.Name,
            q.Value.ToArray(), [.. q.Value.Shape])).ToList();
        SafetensorsWriter.Write(Path.Combine(_dir, Mamba2Checkpoint.WeightsFile), tensors);
        File.WriteAllText(Path.Combine(_dir, Mamba2Checkpoint.ConfigFile), """
            {"d_model": 16, "d_intermediate": 0, "n_layer": 2, "vocab_size": 13, "pad_vocab_size_multiple": 1, "rms_norm": true,
             "residual_in_fp32": true, "fused_add_norm": true, "tie_embeddings": true,
             "ssm_cfg": {"layer": "Mamba2", "d_state": 8, "headdim": 8, "ngroups": 2, "chunk_size": 16}}
            """);
        using var loaded = Mamba2Checkpoint.Load(Device, _dir);
        int[] ids = [4, 4, 9, 1];
        Assert.True(Logits(lm, ids).AsSpan().SequenceEqual(Logits(loaded, ids)));
    }

    [Fact]
    public void InconsistentOrIncompleteCheckpointsAreRejected()
    {
        File.WriteAllText(Path.Combine(_dir, Mamba2Checkpoint.ConfigFile), """{"hidden_size": 16, "num_heads": 3, "head_dim": 8, "vocab_size": 13, "num_hidden_layers": 1}""");
        var e = Assert.Throws<InvalidDataException>(() => Mamba2Checkpoint.ReadConfig(_dir));
        Assert.Contains("num_heads (3) * head_dim (8)", e.Message);

        var rng = new Random(1);
        using (var lm = Mamba2LM.Initialize(Device, Tiny, rng))
        {
            Mamba2Checkpoint.Save(lm, _dir);
        }

        var weights = Path.Combine(_dir, Mamba2Checkpoint.WeightsFile);
        SafetensorsWriter.Write(weights, SafetensorsFile.ReadAll(weights).Values.Where(t => t.Name != "backbone.layers.1.mixer.D"));
        var missing = Assert.Throws<KeyNotFoundException>(() => Mamba2Checkpoint.Load(Device, _dir));
        Assert.Contains("backbone.layers.1.mixer.D", missing.Message);
        Assert.Throws<FileNotFoundException>(() => Mamba2Checkpoint.Load(Device, Path.Combine(_dir, "nowhere")));
    }
}
