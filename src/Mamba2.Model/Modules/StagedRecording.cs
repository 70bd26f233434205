using Mamba2.Vulkan;

namespace Mamba2.Model.Modules;

/// <summary>
/// Records a model's work stage by stage (a layer a stage). Into the caller's stream when there is one: one
/// submission, and what a stage hands on lives as long as that stream. Without one, each stage is its own
/// submission, launched without waiting: the host records stage n + 1 while the device runs stage n, then waits for
/// stage n and frees its scratch and what stage n - 1 handed on to it. So at most two stages' scratch is alive, not
/// every layer's (a 24-layer backward kept about 0.9 GB of scratch a layer alive until its end; docs/PERF.md), and the
/// device does not idle while the host records. Disposing waits for the last stage. <c>completed</c> is told the
/// index of each launched stage (0, 1, ...) once the device has finished it. Stages are named "<c>name</c> index" in a
/// device's stream timeline. A recording can go on as another phase (<see cref="Continue"/>: a forward's last stage
/// still running while the backward's first are recorded).
/// </summary>
internal sealed class StagedRecording : IDisposable
{
    private readonly GpuDevice _device;
    private readonly CommandStream? _stream;
    private readonly List<(int First, string Name, Action<int>? Completed)> _phases = [];
    private int _stages;   // launched so far; the running one is _stages - 1

    private readonly List<IDisposable> _untilEnd = [];
    private List<IDisposable> _older = [];      // handed on by the stage before the running one, read by it
    private List<IDisposable> _previous = [];   // handed on by the running stage
    private List<IDisposable> _current = [];    // handed on by the stage being recorded
    private CommandStream? _running;
    private bool _disposed;

    public StagedRecording(GpuDevice device, CommandStream? stream, Action<int>? completed = null, string name = "stage")
    {
        (_device, _stream) = (device, stream);
        _phases.Add((0, name, completed));
    }

    /// <summary>
    /// Later stages form a new phase: named "<paramref name="name"/> 0", "... 1", and told to
    /// <paramref name="completed"/> by their index within it. The stage still running belongs to the phase before.
    /// </summary>
    public void Continue(string name, Action<int>? completed)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        _phases.Add((_stages, name, completed));
    }

    public void Stage(Action<CommandStream> record)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        if (_stream is not null)
        {
            record(_stream);
            return;
        }

        var phase = _phases[^1];
        var s = _device.BeginStream($"{phase.Name} {_stages - phase.First}");
        try
        {
            record(s);
            s.Launch();
        }
        catch
        {
            s.Dispose();
            throw;
        }

        // The stage before has run: its scratch, and what was handed on to it, have been read for the last time.
        var before = _running;
        _running = s;
        _stages++;
        Finish(before);
        if (before is not null)
        {
            Report(_stages - 2);
        }

        Release(_older);
        (_older, _previous, _current) = (_previous, _current, _older);
    }

    /// <summary>Tells stage <paramref name="index"/>'s phase that it has completed, by its index within the phase.</summary>
    private void Report(int index)
    {
        var phase = _phases.Last(p => p.First <= index);
        phase.Completed?.Invoke(index - phase.First);
    }

    /// <summary>Something the next stage reads.</summary>
    public T HandOn<T>(T resource)
        where T : IDisposable => Hold(resource, _current);

    /// <summary>Something a later stage reads, freed with this recording.</summary>
    public T KeepToEnd<T>(T resource)
        where T : IDisposable => Hold(resource, _untilEnd);

    private T Hold<T>(T resource, List<IDisposable> list)
        where T : IDisposable
    {
        if (_stream is not null)
        {
            return _stream.Own(resource);
        }

        list.Add(resource);
        return resource;
    }

    /// <summary>Waits for a stage's stream (unless the host already has) and frees what it owns.</summary>
    private static void Finish(CommandStream? stage)
    {
        if (stage is not null)
        {
            using (stage)
            {
                if (stage.IsLaunched)
                {
                    stage.Wait();
                }
            }
        }
    }

    private static void Release(List<IDisposable> list)
    {
        list.ForEach(d => d.Dispose());
        list.Clear();
    }

    /// <summary>Waits for the last stage and frees what the stages handed on; a second call does nothing.</summary>
    public void Dispose()
    {
        if (_disposed)
        {
            return;
        }

        _disposed = true;
        try
        {
            var last = _running;
            _running = null;
            Finish(last);
            if (last is not null)
            {
                Report(_stages - 1);
            }
        }
        finally
        {
            Release(_older);
            Release(_previous);
            Release(_current);
            Release(_untilEnd);
        }
    }
}
