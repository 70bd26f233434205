using Mamba2.Model.Distributed;
using Mamba2.Model.Modules;
using Mamba2.Model.Tensors;
using Mamba2.Model.Training;
using Mamba2.Vulkan;
using Spectre.Console;

namespace Mamba2.Cli;

/// <summary>
/// <c>mpirun -np N mamba2 bench train</c>: the Trainer's step on every rank (each its own batch: the global batch
/// grows with N) with the gradients summed over the ranks as the backward forms them. Rank 0 first runs the same
/// steps alone (the others wait), which is the 1-rank reference: scaling efficiency = aggregate tokens/s / (N x
/// alone). Wall clocks, medians over the repeats.
/// </summary>
internal static class TrainScalingBench
{
    public static void Run(Communicator comm, Mamba2LM model, AdamW optimizer, IndexTensor ids, IndexTensor targets, long headBlock, int warmup, int repeats)
    {
        var parameters = model.Parameters;
        double waited = 0;   // after the backward, for the sums left
        void Step(GradientExchange? exchange)
        {
            using var acts = model.ForwardLoss(ids, targets, blockBytes: headBlock);
            Dictionary<string, Tensor> grads;
            if (exchange is null)
            {
                grads = model.Backward(acts);
            }
            else
            {
                exchange.Begin(1f / comm.Size, ids.Values);   // the mean over the ranks' equal batches
                grads = model.Backward(acts, exchange);
                var clock = System.Diagnostics.Stopwatch.StartNew();
                exchange.Finish(grads);
                waited += clock.Elapsed.TotalSeconds;
            }

            optimizer.Step([.. parameters.Select(p => grads[p.Name])], 1f);
            grads.Values.ToList().ForEach(g => g.Dispose());
        }

        List<double> Time(int count, Action step)
        {
            var ms = new List<double>();
            for (var i = 0; i < count; i++)
            {
                var clock = System.Diagnostics.Stopwatch.StartNew();
                step();
                ms.Add(clock.Elapsed.TotalMilliseconds);
            }

            return ms;
        }

        var tokens = (double)ids.Shape[0] * ids.Shape[1];
        double alone = 0;
        if (comm.IsRoot)
        {
            Time(Math.Max(1, warmup), () => Step(null));
            alone = TimingStats.Of(Time(repeats, () => Step(null))).MedianMs;
        }

        comm.Barrier();
        using var exchange = new GradientExchange(comm, parameters, lookupOf: Mamba2LM.EmbeddingsName);
        Time(Math.Max(1, warmup), () => Step(exchange));
        double sum = 0, early = 0;
        waited = 0;
        var wall = TimingStats.Of(Time(repeats, () =>
        {
            Step(exchange);
            sum += exchange.SumSeconds;
            early += exchange.StagesCopiedBackEarly;
        })).MedianMs;

        // Every rank's median step, its sums' time; rank 0 prints.
        var perRank = new double[3 * comm.Size];
        perRank[comm.Rank] = wall;
        perRank[comm.Size + comm.Rank] = sum * 1e3 / repeats;
        perRank[(2 * comm.Size) + comm.Rank] = waited * 1e3 / repeats;
        comm.SumInPlace(perRank);
        var slowest = perRank.Take(comm.Size).Max();
        var aggregate = comm.Size * tokens / slowest * 1e3;   // a step ends when the slowest rank's does
        var table = new Table().AddColumns("rank", "step ms (median)", "tokens/s", "gradient sums ms a step", "waited for them ms a step");
        for (var r = 0; r < comm.Size; r++)
        {
            table.AddRow($"{r}", $"{perRank[r]:F1}", $"{tokens / perRank[r] * 1e3:F0}", $"{perRank[comm.Size + r]:F1}", $"{perRank[(2 * comm.Size) + r]:F1}");
        }

        AnsiConsole.Write(table);
        Console.WriteLine($"gradient sums: {exchange.SumPath}; on rank 0 {early / repeats:F1} stages a step copied back during the backward, the rest after it");
        Console.WriteLine($"{comm.Size} ranks, {tokens:F0} tokens each a step: aggregate {aggregate:F0} tokens/s; rank 0 alone {tokens / alone * 1e3:F0} tokens/s ({alone:F1} ms a step); scaling efficiency {aggregate / (comm.Size * tokens / alone * 1e3):P1}");
    }
}
