using Mamba2.Model.Modules;

namespace Mamba2.Model.Checkpoints;

/// <summary>The two ways a Mamba2 LM checkpoint is laid out on disk.</summary>
public enum CheckpointLayout
{
    /// <summary>transformers' Mamba2ForCausalLM: its config.json keys, model.safetensors.</summary>
    Hf,

    /// <summary>mamba_ssm's MambaLMHeadModel: its config.json (MambaConfig's fields), pytorch_model.bin.</summary>
    MambaSsm,
}

/// <summary>Which layout describes which model.</summary>
public static class CheckpointLayouts
{
    /// <summary>HF, unless the model normalizes per group with ngroups > 1, which only mamba_ssm's layout says.</summary>
    public static CheckpointLayout For(Mamba2LMConfig c) => c.Mixer.NormPerGroup && c.Mixer.NGroups > 1 ? CheckpointLayout.MambaSsm : CheckpointLayout.Hf;

    /// <summary>The name the CLI uses: hf or mamba-ssm.</summary>
    public static string Name(this CheckpointLayout layout) => layout == CheckpointLayout.Hf ? "hf" : "mamba-ssm";

    /// <summary>hf or mamba-ssm; anything else throws naming <paramref name="argument"/>.</summary>
    public static CheckpointLayout Parse(string text, string argument) => text switch
    {
        "hf" => CheckpointLayout.Hf,
        "mamba-ssm" => CheckpointLayout.MambaSsm,
        _ => throw new ArgumentException($"{argument} '{text}': expected hf or mamba-ssm."),
    };

    /// <summary>Throws where <paramref name="layout"/>'s library would read the model as another function.</summary>
    public static void Check(Mamba2LMConfig c, CheckpointLayout layout)
    {
        var m = c.Mixer;
        if (layout == CheckpointLayout.Hf && m.NormPerGroup && m.NGroups > 1)
        {
            throw new ArgumentException($"Checkpoint: this model's gated RMSNorm is per group of d_inner / ngroups (mamba_ssm's, ngroups {m.NGroups}), and transformers' Mamba2 normalizes all of d_inner: save it in mamba_ssm layout.");
        }

        if (layout == CheckpointLayout.MambaSsm)
        {
            if (!m.NormPerGroup && m.NGroups > 1)
            {
                throw new ArgumentException($"Checkpoint: this model's gated RMSNorm spans all of d_inner (transformers', ngroups {m.NGroups}), and mamba_ssm's Mamba2 normalizes per group: save it in HF layout.");
            }

            if (!m.Causal)
            {
                throw new ArgumentException("Checkpoint: mamba_ssm's config has no bidirectional Mamba2 (its MambaConfig takes no other keys): save it in HF layout, where config.json's \"causal\": false says so.");
            }

            if (c.NormEps != 1e-5f || m.NormEps != 1e-5f)
            {
                throw new ArgumentException($"Checkpoint: mamba_ssm's layout fixes the RMSNorm epsilon at 1e-5 (this model: {c.NormEps}, gated {m.NormEps}): save it in HF layout.");
            }
        }
    }
}
