using Mamba2.Model.Training.Tasks;

namespace Mamba2.Model.Training;

/// <summary>
/// Data parallelism's arithmetic: which rows of the global batch a rank takes. Each rank's loss is the mean over its
/// own scored targets, so its gradients are weighted by its share of the global batch's scored targets before they
/// are summed over the ranks (<see cref="GradientExchange"/>): the result is the gradient of the global mean, as one
/// process computing the whole batch gets (up to the order of the additions).
/// </summary>
internal static class DataParallel
{
    /// <summary>Rank <paramref name="rank"/>'s rows of <paramref name="batch"/> rows: as even a split as there is, in rank order.</summary>
    public static (int Start, int Count) Rows(int batch, int rank, int size)
    {
        var start = (int)((long)batch * rank / size);
        return (start, (int)((long)batch * (rank + 1) / size) - start);
    }

    /// <summary>Rows [start, start + count) of <paramref name="batch"/>.</summary>
    public static TaskBatch Slice(TaskBatch batch, int start, int count)
    {
        var l = batch.SeqLen;
        return new TaskBatch(batch.Inputs[(start * l)..((start + count) * l)], batch.Targets[(start * l)..((start + count) * l)], count, l);
    }

    public static int Scored(int[] targets) => targets.Count(t => t != TrainingTask.Ignore);
}
