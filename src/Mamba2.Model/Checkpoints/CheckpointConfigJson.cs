using System.Globalization;
using System.Text.Json;
using System.Text.Json.Nodes;
using Mamba2.Model.Modules;

namespace Mamba2.Model.Checkpoints;

/// <summary>config.json as each library writes it, for <see cref="Mamba2Checkpoint.Write"/>.</summary>
internal static class CheckpointConfigJson
{
    /// <summary>transformers' Mamba2Config keys (floats as floats, a bare Infinity), plus "causal": false for a bidirectional model.</summary>
    public static string Hf(Mamba2LMConfig c, string torchDtype)
    {
        var m = c.Mixer;
        var config = new JsonObject
        {
            ["architectures"] = new JsonArray("Mamba2ForCausalLM"),
            ["model_type"] = "mamba2",
            ["vocab_size"] = c.VocabSize,
            ["hidden_size"] = m.DModel,
            ["state_size"] = m.DState,
            ["num_hidden_layers"] = c.NLayer,
            ["num_heads"] = m.NHeads,
            ["head_dim"] = m.HeadDim,
            ["expand"] = m.Expand,
            ["n_groups"] = m.NGroups,
            ["conv_kernel"] = m.DConv,
            ["chunk_size"] = m.ChunkSize,
            ["layer_norm_epsilon"] = Real(c.NormEps),
            ["use_bias"] = m.Bias,
            ["use_conv_bias"] = m.ConvBias,
            ["rms_norm"] = true,
            ["tie_word_embeddings"] = true,
            ["time_step_min"] = Real(m.DtMin),
            ["time_step_max"] = Real(m.DtMax),
            ["time_step_floor"] = Real(m.DtInitFloor),
            ["time_step_limit"] = Limit(m.DtLimit),
            ["torch_dtype"] = torchDtype,
        };
        if (c.EosTokenId is { } eos)
        {
            config["eos_token_id"] = eos;
        }

        if (!m.Causal)
        {
            config[Mamba2Checkpoint.CausalKey] = false;
        }

        return Text(config);
    }

    /// <summary>mamba_ssm's MambaConfig, every field (its save_pretrained dumps them all; from_pretrained takes no others).</summary>
    public static string MambaSsm(Mamba2LMConfig c)
    {
        var m = c.Mixer;
        var config = new JsonObject
        {
            ["d_model"] = m.DModel,
            ["d_intermediate"] = 0,
            ["n_layer"] = c.NLayer,
            ["vocab_size"] = c.VocabSize,
            ["ssm_cfg"] = new JsonObject
            {
                ["layer"] = "Mamba2",
                ["d_state"] = m.DState,
                ["d_conv"] = m.DConv,
                ["expand"] = m.Expand,
                ["headdim"] = m.HeadDim,
                ["ngroups"] = m.NGroups,
                ["chunk_size"] = m.ChunkSize,
                ["bias"] = m.Bias,
                ["conv_bias"] = m.ConvBias,
                ["norm_before_gate"] = m.NormBeforeGate,
                ["D_has_hdim"] = m.DHasHdim,
                ["dt_min"] = Real(m.DtMin),
                ["dt_max"] = Real(m.DtMax),
                ["dt_init_floor"] = Real(m.DtInitFloor),
                ["dt_limit"] = Limit(m.DtLimit),
            },
            ["attn_layer_idx"] = new JsonArray(),
            ["attn_cfg"] = new JsonObject(),
            ["rms_norm"] = true,
            ["residual_in_fp32"] = true,
            ["fused_add_norm"] = true,
            ["pad_vocab_size_multiple"] = 1,   // the vocabulary is stored as padded
            ["tie_embeddings"] = true,
        };
        return Text(config);
    }

    private static JsonArray Limit((float Min, float Max) limit) =>
        new(Real(limit.Min), float.IsPositiveInfinity(limit.Max) ? "Infinity" : Real(limit.Max));

    /// <summary>Python's json writes an infinite float as a bare Infinity, and both libraries read it so.</summary>
    private static string Text(JsonObject config) =>
        config.ToJsonString(new JsonSerializerOptions { WriteIndented = true }).Replace("\"Infinity\"", "Infinity", StringComparison.Ordinal);

    /// <summary>
    /// A float as JSON that Python reads back as a float: the shortest round-trip digits, with ".0" where they are
    /// integral (transformers' config classes refuse an int such as the 0 of time_step_limit = [0, inf]).
    /// </summary>
    private static JsonNode Real(float value)
    {
        var text = value.ToString("R", CultureInfo.InvariantCulture);
        return JsonNode.Parse(text.Contains('.') || text.Contains('E') ? text : text + ".0")!;
    }
}
