namespace Mamba2.Model.Training.Tasks;

/// <summary>
/// One batch of a training task: input ids (b, L) and per-position targets (b, L), -100 where a position is not
/// scored. Targets are what the logits at that position must predict (next-token tasks shift them themselves).
/// </summary>
public sealed record TaskBatch(int[] Inputs, int[] Targets, int Batch, int SeqLen);

/// <summary>A source of batches, generated from (seed, index) alone so a resumed run sees the same data.</summary>
public abstract class TrainingTask
{
    public const int Ignore = -100;

    public abstract string Name { get; }

    public abstract int VocabSize { get; }

    public abstract int SeqLen { get; }

    /// <summary>Whether a causal model can solve it (reversal needs the future).</summary>
    public virtual bool NeedsBidirectional => false;

    /// <summary>Batch number <paramref name="index"/> of the stream <paramref name="seed"/> (training and evaluation use different seeds).</summary>
    public TaskBatch Batch(int batchSize, long index, int seed)
    {
        var rng = new Random(StreamSeed(seed, index));
        var inputs = new int[batchSize * SeqLen];
        var targets = new int[batchSize * SeqLen];
        Array.Fill(targets, Ignore);
        for (var b = 0; b < batchSize; b++)
        {
            Fill(rng, inputs.AsSpan(b * SeqLen, SeqLen), targets.AsSpan(b * SeqLen, SeqLen));
        }

        return new TaskBatch(inputs, targets, batchSize, SeqLen);
    }

    /// <summary>
    /// A generator seed from (seed, task, index) that is the same in every process (HashCode is randomized per
    /// process, so it cannot be used): FNV-1a over the task name, then SplitMix64 mixing.
    /// </summary>
    private int StreamSeed(int seed, long index)
    {
        ulong h = 14695981039346656037;
        foreach (var ch in Name)
        {
            h = (h ^ ch) * 1099511628211;
        }

        var z = h ^ ((ulong)(uint)seed << 32) ^ (ulong)index;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EB;
        z ^= z >> 31;
        return (int)(z & 0x7FFFFFFF);
    }

    /// <summary>One sequence: inputs and targets (pre-filled with <see cref="Ignore"/>).</summary>
    protected abstract void Fill(Random rng, Span<int> inputs, Span<int> targets);
}
