using Mamba2.Model.Distributed;
using Mamba2.Model.Tensors;
using Mamba2.Model.Training.Tasks;
using Mamba2.Vulkan;

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
    /// rank's tensors, in buckets through the host (our tensors live in Vulkan memory, MPI's buffers in host memory):
    /// per bucket one submission gathers its tensors into a host-readable buffer, MPI sums it, and one submission
    /// scatters the sum back (a transfer per tensor cost a submission and a wait each).
    /// </summary>
    public static void SumGradients(Communicator comm, IReadOnlyList<Tensor> gradients, float weight)
    {
        if (gradients.Count == 0)
        {
            return;
        }

        var buckets = Buckets(gradients);
        var largest = buckets.Max(b => b.Floats);
        var device = gradients[0].Device;
        using var readback = device.CreateBuffer<float>(largest, "gradient bucket (readback)", MemoryKind.Readback);
        using var upload = device.CreateBuffer<float>(largest, "gradient bucket (upload)", MemoryKind.Upload);
        var host = new float[largest];
        foreach (var (first, end, floats) in buckets)
        {
            using (var gather = device.BeginStream())
            {
                long at = 0;
                for (var k = first; k < end; k++)
                {
                    gather.Copy(gradients[k].Buffer, 0, readback, (ulong)at * 4, (ulong)gradients[k].Length * 4);
                    at += gradients[k].Length;
                }

                gather.Submit();
            }

            var span = host.AsSpan(0, floats);
            readback.Download(span);
            if (weight != 1f)
            {
                for (var e = 0; e < span.Length; e++)
                {
                    span[e] *= weight;
                }
            }

            comm.SumInPlace(span);
            upload.Upload<float>(span);
            using (var scatter = device.BeginStream())
            {
                long at = 0;
                for (var k = first; k < end; k++)
                {
                    scatter.Copy(upload, (ulong)at * 4, gradients[k].Buffer, 0, (ulong)gradients[k].Length * 4);
                    at += gradients[k].Length;
                }

                scatter.Submit();
            }
        }
    }

    /// <summary>Runs of whole tensors of at most <see cref="BucketFloats"/> floats (a larger tensor alone).</summary>
    private static List<(int First, int End, int Floats)> Buckets(IReadOnlyList<Tensor> gradients)
    {
        var buckets = new List<(int, int, int)>();
        var i = 0;
        while (i < gradients.Count)
        {
            var end = i;
            long floats = 0;
            do
            {
                floats += gradients[end].Length;
                end++;
            }
            while (end < gradients.Count && floats + gradients[end].Length <= BucketFloats);

            buckets.Add((i, end, checked((int)floats)));
            i = end;
        }

        return buckets;
    }
}
