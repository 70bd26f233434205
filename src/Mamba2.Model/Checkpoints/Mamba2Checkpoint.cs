using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Mamba2.Model.IO;
using Mamba2.Model.Modules;
using Mamba2.Vulkan;

namespace Mamba2.Model.Checkpoints;

/// <summary>
/// Loads a directory with <c>config.json</c> and <c>model.safetensors</c> in HF transformers' Mamba2 layout (keys
/// hidden_size, state_size, num_heads, head_dim, expand, n_groups, conv_kernel, chunk_size, num_hidden_layers,
/// vocab_size, layer_norm_epsilon, use_bias, use_conv_bias, tie_word_embeddings, time_step_limit, ...; JSON as
/// transformers writes it, Infinity included) or mamba_ssm's (d_model, n_layer, vocab_size, ssm_cfg, ...; the
/// embedding named backbone.embedding.weight). F32, F16 and BF16 weights, in model.safetensors or pytorch_model.bin
/// (torch.save's zip, read without running its pickle), either possibly sharded (CheckpointWeights). Saves in HF
/// layout.
/// </summary>
public static class Mamba2Checkpoint
{
    public const string ConfigFile = "config.json";
    public const string WeightsFile = "model.safetensors";

    private const string EmbeddingName = "backbone.embeddings.weight";
    private const string MambaSsmEmbeddingName = "backbone.embedding.weight";

    /// <summary>Our config key for a bidirectional model (neither library has one), written only when false.</summary>
    internal const string CausalKey = "causal";


    /// <summary>The model config from config.json (either layout); unknown or inconsistent values throw naming the key.</summary>
    public static Mamba2LMConfig ReadConfig(string directory)
    {
        var path = Path.Combine(directory, ConfigFile);
        if (!File.Exists(path))
        {
            var what = File.Exists(directory) ? "is a file" : Directory.Exists(directory) ? $"has no {ConfigFile}" : "does not exist";
            throw new FileNotFoundException($"{directory} {what} (a Mamba2 checkpoint is a directory with {ConfigFile} and {WeightsFile}).", path);
        }

        var text = File.ReadAllText(path);
        // transformers writes Infinity / NaN bare, which strict JSON rejects: quote them for the parser.
        text = System.Text.RegularExpressions.Regex.Replace(text, @"(?<=[:\[,]\s*)(-?Infinity|NaN)(?=\s*[,\]}])", "\"$1\"");
        JsonObject root;
        try
        {
            root = JsonNode.Parse(text) as JsonObject ?? throw new InvalidDataException($"{path}: not a JSON object.");
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{path}: not valid JSON ({e.Message})", e);
        }

        try
        {
            return root.ContainsKey("hidden_size") ? FromHf(root, path) : root.ContainsKey("d_model") ? FromMambaSsm(root, path)
                : throw new InvalidDataException($"{path}: neither HF Mamba2 (hidden_size) nor mamba_ssm (d_model) keys found.");
        }
        catch (ArgumentException e)
        {
            throw new InvalidDataException($"{path}: {e.Message}", e);   // a key given twice (JsonObject finds it on first use)
        }
    }

    private static Mamba2LMConfig FromHf(JsonObject o, string path)
    {
        int I(string key, int? dflt = null) => Get(o, key, path, dflt);
        var hidden = I("hidden_size");
        var expand = I("expand", 2);
        var heads = I("num_heads", expand * hidden / 64);
        var headDim = I("head_dim", 64);
        if (heads * headDim != expand * hidden)
        {
            throw new InvalidDataException($"{path}: num_heads ({heads}) * head_dim ({headDim}) must equal expand ({expand}) * hidden_size ({hidden}).");
        }

        if (o.ContainsKey("tie_word_embeddings") && !Bool(o, "tie_word_embeddings", true, path))
        {
            throw new NotSupportedException($"{path}: tie_word_embeddings = false (an untied lm_head) is not supported yet.");
        }

        var mixer = new Mamba2Config(hidden)
        {
            DState = I("state_size", 128),
            DConv = I("conv_kernel", 4),
            Expand = expand,
            HeadDim = headDim,
            NGroups = I("n_groups", 1),
            ChunkSize = I("chunk_size", 256),
            Bias = Bool(o, "use_bias", false, path),
            ConvBias = Bool(o, "use_conv_bias", true, path),
            NormEps = Float(o, "layer_norm_epsilon", 1e-5f, path),
            DtMin = Float(o, "time_step_min", 0.001f, path),
            DtMax = Float(o, "time_step_max", 0.1f, path),
            DtInitFloor = Float(o, "time_step_floor", 1e-4f, path),
            DtLimit = Limit(o, "time_step_limit", path),
            NormPerGroup = false,   // transformers' MambaRMSNormGated normalizes all of d_inner at once
            Causal = Bool(o, CausalKey, true, path),
        };
        return new Mamba2LMConfig(I("vocab_size"), I("num_hidden_layers"), mixer) { NormEps = mixer.NormEps, EosTokenId = Eos(o, path) };
    }

    private static Mamba2LMConfig FromMambaSsm(JsonObject o, string path)
    {
        var ssm = o["ssm_cfg"] switch
        {
            null => [],
            JsonObject obj => obj,
            var other => throw new InvalidDataException($"{path}: ssm_cfg must be an object, got {other.ToJsonString()}."),
        };
        if (ssm["layer"] is JsonNode layer && (layer is not JsonValue v || !v.TryGetValue<string>(out var name) || name != "Mamba2"))
        {
            throw new NotSupportedException($"{path}: ssm_cfg.layer is {layer.ToJsonString()}; only Mamba2 layers are supported.");
        }

        var d = Get(o, "d_model", path);
        var mixer = new Mamba2Config(d)
        {
            DState = Get(ssm, "d_state", path, 128),
            DConv = Get(ssm, "d_conv", path, 4),
            Expand = Get(ssm, "expand", path, 2),
            HeadDim = Get(ssm, "headdim", path, 64),
            NGroups = Get(ssm, "ngroups", path, 1),
            ChunkSize = Get(ssm, "chunk_size", path, 256),
            Bias = Bool(ssm, "bias", false, path),
            ConvBias = Bool(ssm, "conv_bias", true, path),
            NormBeforeGate = Bool(ssm, "norm_before_gate", false, path),
            DHasHdim = Bool(ssm, "D_has_hdim", false, path),
            DtLimit = Limit(ssm, "dt_limit", path),
            DtMin = Float(ssm, "dt_min", 0.001f, path),
            DtMax = Float(ssm, "dt_max", 0.1f, path),
            DtInitFloor = Float(ssm, "dt_init_floor", 1e-4f, path),
        };
        var vocab = Get(o, "vocab_size", path);
        var multiple = Get(o, "pad_vocab_size_multiple", path, 1);
        if (multiple < 1)
        {
            throw new InvalidDataException($"{path}: pad_vocab_size_multiple must be at least 1, got {multiple}.");
        }

        vocab = (vocab + multiple - 1) / multiple * multiple;   // mamba_ssm pads the vocabulary
        return new Mamba2LMConfig(vocab, Get(o, "n_layer", path), mixer with { Causal = Bool(o, CausalKey, true, path) })
        {
            NormEps = Float(o, "norm_epsilon", 1e-5f, path),
        };
    }

    /// <summary>Loads the model; tensors named as HF or mamba_ssm write them, F32 / F16 / BF16.</summary>
    public static Mamba2LM Load(GpuDevice device, string directory)
    {
        var (config, values) = ReadValues(directory);
        return Mamba2LM.FromValues(device, config, values);
    }

    /// <summary>
    /// The config and every parameter (by HF name, as float32) of a checkpoint directory in HF or mamba_ssm layout,
    /// F32 / F16 / BF16, read on the host: what <see cref="Load"/> puts on a device.
    /// </summary>
    public static (Mamba2LMConfig Config, Dictionary<string, float[]> Values) ReadValues(string directory)
    {
        var config = ReadConfig(directory);
        config.Validate();
        using var file = CheckpointWeights.Open(directory);
        var path = file.Describe;
        var values = new Dictionary<string, float[]>();
        foreach (var (name, shape) in Mamba2LM.ParameterShapes(config))
        {
            var stored = name == EmbeddingName && !file.Contains(name) && file.Contains(MambaSsmEmbeddingName) ? MambaSsmEmbeddingName : name;
            if (!file.Contains(stored))
            {
                throw new KeyNotFoundException($"{path}: missing tensor {name} {Tensors.ShapeOps.Format(shape)} (config: {config.NLayer} layers).");
            }

            var t = file.Read(stored);
            if (t.DType is not (SafetensorsDType.F32 or SafetensorsDType.F16 or SafetensorsDType.BF16))
            {
                throw new InvalidDataException($"{path}: {stored} is {t.DType.HeaderName()}; weights must be F32, F16 or BF16.");
            }

            if (!t.Shape.SequenceEqual(shape))
            {
                throw new InvalidDataException($"{path}: {stored} has shape {Tensors.ShapeOps.Format(t.Shape)}, the config implies {Tensors.ShapeOps.Format(shape)}.");
            }

            values[name] = t.ToFloat32();
        }

        return (config, values);
    }

    /// <summary>
    /// Writes the checkpoint in <paramref name="layout"/> (default <see cref="CheckpointLayouts.For"/>: HF unless the
    /// model is one only mamba_ssm's layout describes), each file atomically: HF's config.json and model.safetensors,
    /// or mamba_ssm's config.json and pytorch_model.bin (torch.save's format), lm_head.weight tied in both. The
    /// weights are stored as <paramref name="dtype"/>: F32 (training's masters, the default), or BF16 or F16 rounded
    /// to nearest even for inference (HF's config.json says which in torch_dtype).
    /// </summary>
    public static void Save(Mamba2LM model, string directory, SafetensorsDType dtype = SafetensorsDType.F32, CheckpointLayout? layout = null) =>
        Write(model.Config, model.Parameters.Select(q => (q.Name, q.Value.ToArray())).ToDictionary(), directory, dtype, layout);

    /// <summary>
    /// <see cref="Save"/> from host values (every parameter of <see cref="Mamba2LM.ParameterShapes"/>, by HF name):
    /// what <see cref="ReadValues"/> returns, so a checkpoint converts between layouts and dtypes without a device.
    /// </summary>
    public static void Write(Mamba2LMConfig c, IReadOnlyDictionary<string, float[]> values, string directory,
        SafetensorsDType dtype = SafetensorsDType.F32, CheckpointLayout? layout = null)
    {
        var chosen = layout ?? CheckpointLayouts.For(c);
        CheckpointLayouts.Check(c, chosen);
        var config = chosen == CheckpointLayout.Hf ? CheckpointConfigJson.Hf(c, TorchDtype(dtype)) : CheckpointConfigJson.MambaSsm(c);
        var shapes = Mamba2LM.ParameterShapes(c);
        foreach (var (name, shape) in shapes)
        {
            if (!values.TryGetValue(name, out var v) || v.Length != Tensors.ShapeOps.Elements(shape, name))
            {
                throw new ArgumentException($"Checkpoint: {name} {Tensors.ShapeOps.Format(shape)} is missing or has another size.", nameof(values));
            }
        }

        Directory.CreateDirectory(directory);
        DurableFiles.WriteAllText(Path.Combine(directory, ConfigFile), config);
        var tensors = shapes.Select(q => HostTensor.FromFloat32(q.Name, values[q.Name], q.Shape))
            .Select(t => dtype == SafetensorsDType.F32 ? t : t.Convert(dtype)).ToList();
        var embedding = tensors.FindIndex(t => t.Name == EmbeddingName);
        if (chosen == CheckpointLayout.Hf)
        {
            tensors.Add(tensors[embedding].Renamed("lm_head.weight"));   // tied: transformers writes both
            SafetensorsWriter.Write(Path.Combine(directory, WeightsFile), tensors);
        }
        else
        {
            tensors[embedding] = tensors[embedding].Renamed(MambaSsmEmbeddingName);
            PyTorchCheckpointWriter.Write(Path.Combine(directory, CheckpointWeights.TorchFile), tensors, [("lm_head.weight", MambaSsmEmbeddingName)]);
        }

        // One checkpoint per directory: the other layout's weights, if an earlier save left them, would be read first.
        var other = Path.Combine(directory, chosen == CheckpointLayout.Hf ? CheckpointWeights.TorchFile : WeightsFile);
        if (File.Exists(other))
        {
            File.Delete(other);
        }
    }

    /// <summary>The torch_dtype transformers writes for weights stored as <paramref name="dtype"/> (F32, F16, BF16).</summary>
    public static string TorchDtype(SafetensorsDType dtype) => dtype switch
    {
        SafetensorsDType.F32 => "float32",
        SafetensorsDType.F16 => "float16",
        SafetensorsDType.BF16 => "bfloat16",
        _ => throw new ArgumentException($"Checkpoints store F32, F16 or BF16 weights, not {dtype.HeaderName()}.", nameof(dtype)),
    };

    private static int Get(JsonObject o, string key, string path, int? dflt = null)
    {
        if (o[key] is not JsonValue v)
        {
            return o[key] is { } other ? throw new InvalidDataException($"{path}: {key} must be an integer, got {other.ToJsonString()}.")
                : dflt ?? throw new InvalidDataException($"{path}: missing required key {key}.");
        }

        return v.TryGetValue<int>(out var i) ? i : throw new InvalidDataException($"{path}: {key} must be an integer, got {v.ToJsonString()}.");
    }

    /// <summary>eos_token_id: an integer, null or absent (none), or a list whose first id generation stops at.</summary>
    private static int? Eos(JsonObject o, string path) => o["eos_token_id"] switch
    {
        null => null,
        JsonValue v when v.TryGetValue<int>(out var id) => id,
        JsonArray { Count: > 0 } a when a[0] is JsonValue v && v.TryGetValue<int>(out var id) => id,
        var other => throw new InvalidDataException($"{path}: eos_token_id must be an integer, got {other.ToJsonString()}."),
    };

    private static bool Bool(JsonObject o, string key, bool dflt, string path) => o[key] switch
    {
        null => dflt,
        JsonValue v when v.TryGetValue<bool>(out var b) => b,
        var other => throw new InvalidDataException($"{path}: {key} must be true or false, got {other.ToJsonString()}."),
    };

    private static float Float(JsonObject o, string key, float dflt, string path)
    {
        // transformers 5 writes a non-finite float as {"__float__": "Infinity"}; older versions as a bare Infinity.
        var node = o[key] is JsonObject { Count: 1 } tagged && tagged["__float__"] is JsonValue inner ? inner : o[key];
        if (node is not JsonValue v)
        {
            return node is { } other ? throw new InvalidDataException($"{path}: {key} must be a number, got {other.ToJsonString()}.") : dflt;
        }

        if (v.TryGetValue<double>(out var d))
        {
            return (float)d;
        }

        return v.TryGetValue<string>(out var s) && float.TryParse(s, NumberStyles.Float, CultureInfo.InvariantCulture, out var f) ? f
            : throw new InvalidDataException($"{path}: {key} must be a number, got {v.ToJsonString()}.");
    }

    private static (float, float) Limit(JsonObject o, string key, string path)
    {
        if (o[key] is not JsonArray a || a.Count != 2)
        {
            return o[key] is null ? (0f, float.PositiveInfinity) : throw new InvalidDataException($"{path}: {key} must be [min, max].");
        }

        var tmp = new JsonObject { ["min"] = a[0]?.DeepClone(), ["max"] = a[1]?.DeepClone() };
        return (Float(tmp, "min", 0f, path), Float(tmp, "max", float.PositiveInfinity, path));
    }
}
