namespace Mamba2.Model.Generation;

/// <summary>
/// How the next token is drawn from logits: greedy by default; otherwise softmax at <see cref="Temperature"/>, kept to
/// the <see cref="TopK"/> most likely and the smallest set whose mass reaches <see cref="TopP"/> (HF's order: top-k,
/// then top-p), with a seeded generator so runs repeat. <see cref="RepetitionPenalty"/> is HF's (CTRL's): every id
/// already in the sequence has its logit divided by it where positive, multiplied where negative, before any of that.
/// </summary>
public sealed record SamplingOptions(float Temperature = 0f, int TopK = 0, float TopP = 1f, int Seed = 0, float RepetitionPenalty = 1f)
{
    public bool Greedy => Temperature <= 0f;
}

public sealed class Sampler(SamplingOptions options)
{
    private readonly Random _rng = new(options.Seed);

    public SamplingOptions Options { get; } = options;

    /// <summary>The index of the largest logit, the first one on ties (greedy decoding and training accuracy).</summary>
    public static int ArgMax(ReadOnlySpan<float> logits)
    {
        var best = 0;
        for (var i = 1; i < logits.Length; i++)
        {
            if (logits[i] > logits[best])
            {
                best = i;
            }
        }

        return best;
    }

    /// <summary>The next token from one row of logits, after <paramref name="history"/> (the ids so far, for the repetition penalty).</summary>
    public int Next(ReadOnlySpan<float> logits, IEnumerable<int>? history = null)
    {
        if (logits.Length == 0)
        {
            throw new ArgumentException("Sampler: empty logits.", nameof(logits));
        }

        if (Options.RepetitionPenalty != 1f && history is not null)
        {
            var penalized = logits.ToArray();
            foreach (var id in history.Distinct().Where(i => i >= 0 && i < penalized.Length))
            {
                penalized[id] = penalized[id] > 0 ? penalized[id] / Options.RepetitionPenalty : penalized[id] * Options.RepetitionPenalty;
            }

            return Next(penalized);
        }

        if (Options.Greedy)
        {
            return ArgMax(logits);
        }

        var order = Enumerable.Range(0, logits.Length).ToArray();
        var l = logits.ToArray();
        Array.Sort(order, (a, b) => l[b].CompareTo(l[a]));
        var keep = Options.TopK > 0 ? Math.Min(Options.TopK, order.Length) : order.Length;
        var max = l[order[0]];
        var probs = new double[keep];
        double total = 0;
        for (var i = 0; i < keep; i++)
        {
            probs[i] = Math.Exp((l[order[i]] - max) / Options.Temperature);
            total += probs[i];
        }

        // Top-p: the smallest prefix whose probability reaches TopP (always at least one token).
        var cut = keep;
        if (Options.TopP < 1f)
        {
            double mass = 0;
            for (var i = 0; i < keep; i++)
            {
                mass += probs[i] / total;
                if (mass >= Options.TopP)
                {
                    cut = i + 1;
                    break;
                }
            }
        }

        var kept = probs.Take(cut).Sum();
        var u = _rng.NextDouble() * kept;
        for (var i = 0; i < cut; i++)
        {
            u -= probs[i];
            if (u <= 0)
            {
                return order[i];
            }
        }

        return order[cut - 1];
    }
}
