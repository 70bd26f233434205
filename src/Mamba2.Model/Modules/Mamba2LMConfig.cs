namespace Mamba2.Model.Modules;

/// <summary>
/// A Mamba2 language model: embedding, <see cref="NLayer"/> pre-norm residual blocks h = h + mixer(rmsnorm(h)),
/// norm_f and an LM head tied to the embedding (HF Mamba2ForCausalLM / mamba_ssm MambaLMHeadModel).
/// </summary>
public sealed record Mamba2LMConfig(int VocabSize, int NLayer, Mamba2Config Mixer)
{
    /// <summary>RMSNorm epsilon of the blocks and norm_f (HF layer_norm_epsilon).</summary>
    public float NormEps { get; init; } = 1e-5f;

    /// <summary>The end-of-text token generation stops at (HF eos_token_id), where the checkpoint names one.</summary>
    public int? EosTokenId { get; init; }

    public void Validate()
    {
        if (VocabSize <= 0 || NLayer <= 0)
        {
            throw new ArgumentException($"Mamba2LMConfig: vocab_size ({VocabSize}) and n_layer ({NLayer}) must be positive.");
        }

        Mixer.Validate();
        if ((long)VocabSize * Mixer.DModel > int.MaxValue)
        {
            throw new ArgumentException($"Mamba2LMConfig: the embedding, vocab_size ({VocabSize}) x d_model ({Mixer.DModel}), is more than a tensor holds ({int.MaxValue} elements).");
        }
    }
}
