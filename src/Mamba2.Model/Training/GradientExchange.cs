using Mamba2.Model.Distributed;
using Mamba2.Model.Modules;
using Mamba2.Model.Tensors;
using Mamba2.Vulkan;

namespace Mamba2.Model.Training;

/// <summary>
/// Sums the gradients over the ranks while the backward runs. Each backward stage (a layer) records copies of its
/// gradients into one host-visible buffer laid out like the parameters; once the device has finished a stage, a
/// worker weights that stage's part (<see cref="DataParallel"/>) and sums it over the ranks, in place, while the
/// device works on the layers below and the host records them: through shared memory where all ranks share a host
/// (<see cref="SharedSums"/>), else with MPI's all-reduce. A stage whose sums are done by the time a later stage is
/// recorded has them copied back into its gradients there; after the backward, one submission copies the rest.
/// Stages are summed one at a time in stage
/// order, so the calls are the same on every rank and the result does not depend on timing. Per step: <see cref="Begin"/>,
/// <c>Mamba2LM.Backward(acts, exchange)</c>, <see cref="Finish"/>.
/// </summary>
public sealed class GradientExchange : IGradientListener, IDisposable
{
    private readonly Communicator _comm;
    private readonly GpuDevice _device;
    private readonly Dictionary<string, (long Offset, long Length)> _at = [];
    private readonly GpuBuffer<float> _readback;
    private readonly SharedSums? _shared;
    private readonly Dictionary<int, List<(long Offset, long Length)>> _recorded = [];
    private readonly Dictionary<int, IReadOnlyList<(string Name, Tensor Gradient)>> _unsummed = [];   // stage -> its gradients, until copied back
    private readonly System.Collections.Concurrent.ConcurrentQueue<int> _summed = new();   // stages the worker is done with
    private readonly HashSet<string> _formed = [];   // gradients the stages of this step recorded
    private Task _work = Task.CompletedTask;
    private float _weight = 1f;

    /// <summary>An exchange for <paramref name="parameters"/> (a model's, in its order) over <paramref name="comm"/>'s ranks.</summary>
    public GradientExchange(Communicator comm, IReadOnlyList<(string Name, Tensor Value)> parameters)
    {
        _comm = comm;
        _device = parameters[0].Value.Device;
        long total = 0;
        foreach (var (name, value) in parameters)
        {
            _at[name] = (total, value.Length);
            total += value.Length;
        }

        _readback = _device.CreateBuffer<float>(total, "gradients and their sums (host)", MemoryKind.Readback);
        try
        {
            _shared = SharedSums.Open(comm, total, out var why);
            SumPath = _shared is null ? $"MPI all-reduce ({why})" : $"shared memory, {SharedSums.Threads} thread(s) a rank";
        }
        catch
        {
            _readback.Dispose();
            throw;
        }
    }

    /// <summary>How the sums are taken, for reports: shared memory and its threads, or MPI's all-reduce and why.</summary>
    public string SumPath { get; }

    /// <summary>Stages whose sums went back into their gradients during this step's backward (the rest after it).</summary>
    public int StagesCopiedBackEarly { get; private set; }

    /// <summary>Wall time the worker spent summing (host copies and MPI), this step.</summary>
    public double SumSeconds { get; private set; }

    /// <summary>Before a backward: this rank's weight (its share of the global batch's scored targets).</summary>
    public void Begin(float weight)
    {
        _weight = weight;
        _recorded.Clear();
        _unsummed.Clear();
        _summed.Clear();
        _formed.Clear();
        StagesCopiedBackEarly = 0;
        _work = Task.CompletedTask;
        SumSeconds = 0;
    }

    public void Recorded(int stage, IReadOnlyList<(string Name, Tensor Gradient)> gradients, CommandStream stream)
    {
        // Sums that are done go back into their gradients in this stage's submission, beside the backward.
        while (_summed.TryDequeue(out var done))
        {
            if (_unsummed.Remove(done, out var summed))
            {
                CopyBack(stream, summed);
                StagesCopiedBackEarly++;
            }
        }

        _unsummed[stage] = gradients;
        _formed.UnionWith(gradients.Select(g => g.Name));
        var parts = new List<(long Offset, long Length)>();
        foreach (var (name, g) in gradients)
        {
            var (offset, length) = _at[name];
            stream.Copy(g.Buffer, 0, _readback, (ulong)offset * 4, (ulong)length * 4);
            parts.Add((offset, length));
        }

        _recorded[stage] = Merge(parts);
    }

    public void Completed(int stage)
    {
        if (!_recorded.Remove(stage, out var parts))
        {
            return;
        }

        var weight = _weight;
        _work = _work.ContinueWith(previous =>
        {
            previous.GetAwaiter().GetResult();   // a failed sum stops the chain (and reaches Finish)
            var clock = System.Diagnostics.Stopwatch.StartNew();
            foreach (var (offset, length) in parts)
            {
                for (long at = 0; at < length; at += int.MaxValue / 4)
                {
                    // In place in the host-readable buffer: weighted, summed by MPI, then read back by the scatter.
                    var part = _readback.HostView<float>((ulong)(offset + at) * 4, (int)Math.Min(int.MaxValue / 4, length - at));
                    if (_shared is not null)
                    {
                        _shared.SumInPlace(part, offset + at, weight);
                    }
                    else
                    {
                        Scale(part, weight);
                        _comm.SumInPlace(part);
                    }
                }
            }

            SumSeconds += clock.Elapsed.TotalSeconds;
            _summed.Enqueue(stage);
        }, CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default);
    }

    /// <summary>
    /// After the backward: waits for the sums, then copies those not yet copied back into their gradients (one
    /// submission). <paramref name="gradients"/> holds every gradient the backward formed.
    /// </summary>
    public void Finish(IReadOnlyDictionary<string, Tensor> gradients)
    {
        _work.GetAwaiter().GetResult();
        if (_recorded.Count > 0)
        {
            throw new InvalidOperationException($"GradientExchange: stage(s) {string.Join(", ", _recorded.Keys)} were recorded but never completed.");
        }

        if (gradients.Keys.FirstOrDefault(n => !_formed.Contains(n)) is { } missing)
        {
            throw new InvalidOperationException($"GradientExchange: gradient {missing} was never recorded by a stage, so it was not summed.");
        }

        using var scatter = _device.BeginStream();
        foreach (var stage in _unsummed.Keys.Order())
        {
            CopyBack(scatter, _unsummed[stage]);
        }

        _unsummed.Clear();
        _summed.Clear();
        scatter.Submit();
    }

    private void CopyBack(CommandStream stream, IReadOnlyList<(string Name, Tensor Gradient)> gradients)
    {
        foreach (var (name, g) in gradients)
        {
            var (offset, length) = _at[name];
            stream.Copy(_readback, (ulong)offset * 4, g.Buffer, 0, (ulong)length * 4);
        }
    }

    /// <summary>Adjacent parts as one (fewer, larger all-reduces).</summary>
    private static List<(long Offset, long Length)> Merge(List<(long Offset, long Length)> parts)
    {
        var merged = new List<(long Offset, long Length)>();
        foreach (var (offset, length) in parts.OrderBy(p => p.Offset))
        {
            if (merged.Count > 0 && merged[^1].Offset + merged[^1].Length == offset)
            {
                merged[^1] = (merged[^1].Offset, merged[^1].Length + length);
            }
            else
            {
                merged.Add((offset, length));
            }
        }

        return merged;
    }

    public void Dispose()
    {
        try
        {
            _work.Wait();
        }
        catch (AggregateException)
        {
            // already reported by Finish
        }

        _shared?.Dispose();
        _readback.Dispose();
    }

    private static void Scale(Span<float> values, float weight)
    {
        if (weight == 1f)
        {
            return;
        }

        var w = new System.Numerics.Vector<float>(weight);
        var vectors = System.Runtime.InteropServices.MemoryMarshal.Cast<float, System.Numerics.Vector<float>>(values);
        for (var i = 0; i < vectors.Length; i++)
        {
            vectors[i] *= w;
        }

        for (var e = vectors.Length * System.Numerics.Vector<float>.Count; e < values.Length; e++)
        {
            values[e] *= weight;
        }
    }
}
