using Mamba2.Model.Distributed;
using Mamba2.Model.Tensors;
using Mamba2.Model.Training.Tasks;

namespace Mamba2.Model.Training;

/// <summary>
/// Data parallelism's arithmetic: which rows of the global batch a rank takes, and gradients summed over the ranks.
/// Each rank's loss is the mean over its own scored targets, so its gradients are weighted by its share of the
/// global batch's scored targets before the sum: the result is the gradient of the global mean, as one process
/// computing the whole batch gets (up to the order of the additions).
/// </summary>
internal static class DataParallel
{
    /// <summary>Gradients travel through the host in buckets of this many floats (64 MiB).</summary>
    private const int BucketFloats = 16 << 20;

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

    /// <summary>
    /// Every rank's <paramref name="gradients"/> times its <paramref name="weight"/>, summed over the ranks into each
    /// rank's tensors, in buckets through the host (our tensors live in Vulkan memory, MPI's buffers in host memory).
    /// </summary>
    public static void SumGradients(Communicator comm, IReadOnlyList<Tensor> gradients, float weight)
    {
        var i = 0;
        while (i < gradients.Count)
        {
            // A bucket: whole tensors up to BucketFloats (at least one).
            var end = i;
            long floats = 0;
            do
            {
                floats += gradients[end].Length;
                end++;
            }
            while (end < gradients.Count && floats + gradients[end].Length <= BucketFloats);

            var host = new float[checked((int)floats)];
            var at = 0;
            for (var k = i; k < end; k++)
            {
                var g = gradients[k].ToArray();
                for (var e = 0; e < g.Length; e++)
                {
                    host[at + e] = g[e] * weight;
                }

                at += g.Length;
            }

            comm.SumInPlace(host);
            at = 0;
            for (var k = i; k < end; k++)
            {
                var n = checked((int)gradients[k].Length);
                gradients[k].CopyFrom(host.AsSpan(at, n));
                at += n;
            }

            i = end;
        }
    }
}
