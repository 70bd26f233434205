using Mamba2.Model.Modules;
using Mamba2.Model.Tensors;

namespace Mamba2.Model.Generation;

/// <summary>Autoregressive generation: the prompt through the chunked forward, then one recurrent step per token.</summary>
public static class Generator
{
    /// <summary>
    /// The new ids (not the prompt) for one sequence: at most <paramref name="maxNewTokens"/>, ending with
    /// <paramref name="eosId"/> where it is drawn (as transformers' generate stops); <paramref name="onToken"/> sees each
    /// as it is drawn (streaming).
    /// </summary>
    public static IReadOnlyList<int> Generate(Mamba2LM lm, IReadOnlyList<int> prompt, int maxNewTokens, SamplingOptions? sampling = null,
        int? eosId = null, Action<int>? onToken = null)
    {
        if (prompt.Count == 0)
        {
            throw new ArgumentException("Generator: the prompt needs at least one token.", nameof(prompt));
        }

        ArgumentOutOfRangeException.ThrowIfNegative(maxNewTokens);
        var sampler = new Sampler(sampling ?? new SamplingOptions());
        var device = lm.Embeddings.Device;
        var generated = new List<int>();
        using var ids = IndexTensor.FromArray(device, "prompt", [.. prompt], 1, prompt.Count);
        var (state, logits) = lm.Prefill(ids);
        using (state)
        {
            for (var i = 0; i < maxNewTokens; i++)
            {
                int next;
                using (logits)
                {
                    next = sampler.Next(logits.ToArray(), prompt.Concat(generated));
                }

                generated.Add(next);
                onToken?.Invoke(next);
                if (i + 1 == maxNewTokens || next == eosId)
                {
                    break;
                }

                using var token = IndexTensor.FromArray(device, "token", [next], 1);
                logits = lm.Step(token, state);
            }

            if (maxNewTokens == 0)
            {
                logits.Dispose();
            }
        }

        return generated;
    }
}
