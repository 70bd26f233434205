using Mamba2.Model.Distributed;
using Mamba2.Model.Modules;
using Mamba2.Model.Ops;
using Mamba2.Model.Tensors;
using Mamba2.Vulkan;
using TensorPrimitives = System.Numerics.Tensors.TensorPrimitives;

namespace Mamba2.Model.Training;

/// <summary>
/// Sums the gradients over the ranks while the backward runs. Each backward stage (a layer) records copies of its
/// gradients into one host-visible buffer laid out like the parameters; once the device has finished a stage, a
/// worker weights that stage's part (<see cref="DataParallel"/>) and sums it over the ranks, in place, while the
/// device works on the layers below and the host records them: through shared memory where all ranks share a host
/// (<see cref="SharedSums"/>), else with MPI's all-reduce. A stage whose sums are done by the time a later stage is
/// recorded has them copied back into its gradients there; after the backward, one submission copies the rest.
/// Stages are summed one at a time in stage order, so the calls are the same on every rank and the result does not
/// depend on timing. Given the parameter whose gradient the LM forms in two parts (the tied embedding's) and each
/// step's tokens, it sums the head's part with the first stage and, of the lookup's, only the rows some rank's tokens
/// touch (<see cref="IGradientListener.TakesLookupApart"/>), then adds those into the gradient. Per step:
/// <see cref="Begin"/>, <c>Mamba2LM.Backward(acts, exchange)</c>, <see cref="Finish"/>.
/// </summary>
public sealed class GradientExchange : IGradientListener, IDisposable
{
    private readonly Communicator _comm;
    private readonly GpuDevice _device;
    private readonly Dictionary<string, (long Offset, long Length)> _at = [];
    private readonly GpuBuffer<float> _readback;
    private readonly SharedSums? _shared;
    private readonly Dictionary<int, List<(long Offset, long Length)>> _recorded = [];
    private readonly Dictionary<int, Action<CommandStream>> _unsummed = [];   // stage -> the copy of its sums back, until recorded
    private readonly Dictionary<string, Tensor> _gradients = [];   // the gradients this step's stages recorded, by name
    private readonly string? _lookupOf;   // the parameter whose lookup part may come apart
    private readonly long _lookupAt;      // its rows' place in the readback buffer, after the parameters
    private readonly (int Vocab, int Dim) _lookupShape;
    private IndexTensor? _lookupRows;     // this step's: the rows any rank's tokens touch, ascending
    private readonly System.Collections.Concurrent.ConcurrentQueue<int> _summed = new();   // stages the worker is done with
    private Task _work = Task.CompletedTask;
    private float _weight = 1f;

    /// <summary>
    /// An exchange for <paramref name="parameters"/> (a model's, in its order) over <paramref name="comm"/>'s ranks.
    /// <paramref name="lookupOf"/>: the (V, d) parameter whose gradient may come as a head's and a lookup's part
    /// (an LM's tied embedding); room for its rows is kept beside the parameters'.
    /// </summary>
    public GradientExchange(Communicator comm, IReadOnlyList<(string Name, Tensor Value)> parameters, string? lookupOf = null)
    {
        _comm = comm;
        _device = parameters[0].Value.Device;
        long total = 0;
        foreach (var (name, value) in parameters)
        {
            _at[name] = (total, value.Length);
            total += value.Length;
        }

        if (lookupOf is not null)
        {
            var table = parameters.FirstOrDefault(q => q.Name == lookupOf).Value
                ?? throw new ArgumentException($"GradientExchange: no parameter {lookupOf} for the lookup's rows.", nameof(lookupOf));
            if (table.Rank != 2)
            {
                throw new ArgumentException($"GradientExchange: {lookupOf} is {ShapeOps.Format(table.Shape)}, not a (V, d) table.", nameof(lookupOf));
            }

            (_lookupOf, _lookupAt, _lookupShape) = (lookupOf, total, (table.Shape[0], table.Shape[1]));
            total += table.Length;
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

    /// <summary>Whether this step's lookup part comes apart (<see cref="Begin"/> was given the tokens).</summary>
    public bool TakesLookupApart => _lookupRows is not null;

    /// <summary>
    /// Before a backward: this rank's weight (its share of the global batch's scored targets) and, for an exchange
    /// made with <c>lookupOf</c>, the token ids of this rank's batch (every rank gives them or none does: the rows
    /// they touch are agreed on with one sum over the ranks, here, before the backward).
    /// </summary>
    public void Begin(float weight, ReadOnlySpan<int> tokens = default)
    {
        _weight = weight;
        _recorded.Clear();
        _unsummed.Clear();
        _gradients.Clear();
        _lookupRows?.Dispose();
        _lookupRows = null;
        if (_lookupOf is not null && !tokens.IsEmpty)
        {
            var vocab = _lookupShape.Vocab;
            var touched = new double[vocab];
            foreach (var t in tokens)
            {
                if ((uint)t >= (uint)vocab)
                {
                    throw new ArgumentOutOfRangeException(nameof(tokens), $"GradientExchange: token id {t} is outside {_lookupOf}'s {vocab} rows.");
                }

                touched[t] = 1;
            }

            _comm.SumInPlace(touched);
            int[] rows = [.. Enumerable.Range(0, vocab).Where(r => touched[r] > 0)];
            _lookupRows = IndexTensor.FromArray(_device, "gradient exchange: the lookup's rows", rows, 1, rows.Length);
        }

        _summed.Clear();
        StagesCopiedBackEarly = 0;
        _work = Task.CompletedTask;
        SumSeconds = 0;
    }

    public void Recorded(int stage, IReadOnlyList<(string Name, Tensor Gradient)> gradients, CommandStream stream)
    {
        CopyBackSummed(stream);
        _unsummed[stage] = s => CopyBack(s, gradients);
        foreach (var (name, g) in gradients)
        {
            _gradients[name] = g;
        }

        var parts = new List<(long Offset, long Length)>();
        foreach (var (name, g) in gradients)
        {
            var (offset, length) = _at[name];
            stream.Copy(g.Buffer, 0, _readback, (ulong)offset * 4, (ulong)length * 4);
            parts.Add((offset, length));
        }

        _recorded[stage] = Merge(parts);
    }

    public void RecordedLookup(int stage, string name, Tensor lookup, CommandStream stream)
    {
        if (_lookupRows is not { } rows || name != _lookupOf)
        {
            throw new InvalidOperationException($"GradientExchange: a lookup part of {name} came, but this step takes none apart (Begin without tokens, or another parameter).");
        }

        if (!_gradients.ContainsKey(name))
        {
            throw new InvalidOperationException($"GradientExchange: the lookup part of {name} came before its head part.");
        }

        CopyBackSummed(stream);
        var dim = _lookupShape.Dim;
        var touched = stream.Own(Embedding.Forward(rows, lookup, stream));   // (1, rows, d): the only rows not zero
        stream.Copy(touched.Buffer, 0, _readback, (ulong)_lookupAt * 4, touched.Buffer.SizeBytes);
        _recorded[stage] = [(_lookupAt, touched.Length)];
        _unsummed[stage] = s =>
        {
            // The rows' sums back, spread over a table of zeros and added into the gradient (its head part's sum by now).
            var sums = s.Own(Tensor.Empty(_device, "gradient exchange: the lookup's summed rows", 1, (int)rows.Length, dim));
            s.Copy(_readback, (ulong)_lookupAt * 4, sums.Buffer, 0, sums.Buffer.SizeBytes);
            var table = s.Own(Embedding.Backward(sums, rows, _lookupShape.Vocab, s));
            Elementwise.Add(table, _gradients[name], _gradients[name], s);
        };
    }

    /// <summary>Sums that are done go back into their gradients in this stage's submission, beside the backward.</summary>
    private void CopyBackSummed(CommandStream stream)
    {
        while (_summed.TryDequeue(out var done))
        {
            if (_unsummed.Remove(done, out var copyBack))
            {
                copyBack(stream);
                StagesCopiedBackEarly++;
            }
        }
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
                        TensorPrimitives.Multiply(part, weight, part);
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

        if (gradients.Keys.FirstOrDefault(n => !_gradients.ContainsKey(n)) is { } missing)
        {
            throw new InvalidOperationException($"GradientExchange: gradient {missing} was never recorded by a stage, so it was not summed.");
        }

        using var scatter = _device.BeginStream();
        foreach (var stage in _unsummed.Keys.Order())
        {
            _unsummed[stage](scatter);
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
        _lookupRows?.Dispose();
        _readback.Dispose();
    }
}
