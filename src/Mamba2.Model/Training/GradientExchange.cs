using Mamba2.Model.Distributed;
using Mamba2.Model.Modules;
using Mamba2.Model.Tensors;
using Mamba2.Vulkan;

namespace Mamba2.Model.Training;

/// <summary>
/// Sums the gradients over the ranks while the backward runs. Each backward stage (a layer) records copies of its
/// gradients into one host-readable buffer laid out like the parameters; once the device has finished a stage, a
/// worker weights that stage's part (<see cref="DataParallel"/>), sums it over the ranks with MPI and writes it into
/// a host-writable buffer, while the device works on the layers below and the host records them. After the
/// backward, one submission copies the sums back into the gradients. Stages are summed one at a time in stage
/// order, so the calls are the same on every rank and the result does not depend on timing. Per step: <see cref="Begin"/>,
/// <c>Mamba2LM.Backward(acts, exchange)</c>, <see cref="Finish"/>.
/// </summary>
public sealed class GradientExchange : IGradientListener, IDisposable
{
    private readonly Communicator _comm;
    private readonly GpuDevice _device;
    private readonly Dictionary<string, (long Offset, long Length)> _at = [];
    private readonly GpuBuffer<float> _readback;
    private readonly GpuBuffer<float> _upload;
    private readonly Dictionary<int, List<(long Offset, long Length)>> _recorded = [];
    private Task _work = Task.CompletedTask;
    private float _weight = 1f;
    private float[] _host = [];   // the worker's (one at a time)

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

        _readback = _device.CreateBuffer<float>(total, "gradients (readback)", MemoryKind.Readback);
        try
        {
            _upload = _device.CreateBuffer<float>(total, "gradient sums (upload)", MemoryKind.Upload);
        }
        catch
        {
            _readback.Dispose();
            throw;
        }
    }

    /// <summary>Wall time the worker spent summing (host copies and MPI), this step.</summary>
    public double SumSeconds { get; private set; }

    /// <summary>Before a backward: this rank's weight (its share of the global batch's scored targets).</summary>
    public void Begin(float weight)
    {
        _weight = weight;
        _recorded.Clear();
        _work = Task.CompletedTask;
        SumSeconds = 0;
    }

    public void Recorded(int stage, IReadOnlyList<(string Name, Tensor Gradient)> gradients, CommandStream stream)
    {
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
                    var n = (int)Math.Min(int.MaxValue / 4, length - at);
                    var source = _readback.HostView<float>((ulong)(offset + at) * 4, n);
                    var sum = _upload.HostView<float>((ulong)(offset + at) * 4, n);
                    if (_host.Length < n)
                    {
                        _host = new float[n];
                    }

                    var host = _host.AsSpan(0, n);
                    for (var e = 0; e < n; e++)
                    {
                        host[e] = source[e] * weight;
                    }

                    _comm.SumInPlace(host);
                    host.CopyTo(sum);
                }
            }

            SumSeconds += clock.Elapsed.TotalSeconds;
        }, CancellationToken.None, TaskContinuationOptions.None, TaskScheduler.Default);
    }

    /// <summary>After the backward: waits for the sums, then copies them into <paramref name="gradients"/> (one submission).</summary>
    public void Finish(IReadOnlyDictionary<string, Tensor> gradients)
    {
        _work.GetAwaiter().GetResult();
        if (_recorded.Count > 0)
        {
            throw new InvalidOperationException($"GradientExchange: stage(s) {string.Join(", ", _recorded.Keys)} were recorded but never completed.");
        }

        using var scatter = _device.BeginStream();
        foreach (var (name, g) in gradients)
        {
            var (offset, length) = _at[name];
            scatter.Copy(_upload, (ulong)offset * 4, g.Buffer, 0, (ulong)length * 4);
        }

        scatter.Submit();
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

        _readback.Dispose();
        _upload.Dispose();
    }
}
