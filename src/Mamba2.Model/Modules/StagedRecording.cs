using Mamba2.Model.Ops;
using Mamba2.Vulkan;

namespace Mamba2.Model.Modules;

/// <summary>
/// Records a model's work stage by stage (a layer a stage). Into the caller's stream when there is one: one
/// submission, and what a stage hands on lives as long as that stream. Without one, each stage is its own submission,
/// so its scratch is freed before the next stage is recorded and what it hands on is freed once the stage after it
/// has run: the peak is the activations plus one layer's scratch instead of every layer's (a 24-layer backward kept
/// about 0.9 GB of scratch a layer alive until its end; docs/PERF.md).
/// </summary>
internal sealed class StagedRecording(GpuDevice device, CommandStream? stream) : IDisposable
{
    private readonly List<IDisposable> _untilEnd = [];
    private List<IDisposable> _previous = [];
    private List<IDisposable> _current = [];

    public void Stage(Action<CommandStream> record)
    {
        Shaders.RunIn(device, stream, record);
        if (stream is null)
        {
            // Submitted and waited for: what the stage before handed on has been read for the last time.
            Release(_previous);
            (_previous, _current) = (_current, []);
        }
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
        if (stream is not null)
        {
            return stream.Own(resource);
        }

        list.Add(resource);
        return resource;
    }

    private static void Release(List<IDisposable> list)
    {
        list.ForEach(d => d.Dispose());
        list.Clear();
    }

    public void Dispose()
    {
        Release(_previous);
        Release(_current);
        Release(_untilEnd);
    }
}
