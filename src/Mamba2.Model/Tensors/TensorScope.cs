using Mamba2.Vulkan;

namespace Mamba2.Model.Tensors;

/// <summary>
/// Tensors an op allocates while it records: if recording fails, <see cref="DisposeAll"/> frees every one of them,
/// so a failed call leaks nothing.
/// </summary>
internal sealed class TensorScope(GpuDevice device)
{
    private readonly List<Tensor> _created = [];

    /// <summary>How many tensors the scope holds so far (a mark to split outputs from scratch).</summary>
    public int Count => _created.Count;

    public Tensor New(string name, params int[] shape) => NewIn(MemoryKind.Device, name, shape);

    /// <summary>A device tensor of <paramref name="dtype"/>.</summary>
    public Tensor NewOf(TensorDType dtype, string name, params int[] shape)
    {
        var t = Tensor.Empty(device, name, dtype, shape);
        _created.Add(t);
        return t;
    }

    /// <summary>A tensor in memory of <paramref name="kind"/> (<see cref="Tensor.Empty(GpuDevice, string, MemoryKind, int[])"/>).</summary>
    public Tensor NewIn(MemoryKind kind, string name, params int[] shape)
    {
        var t = Tensor.Empty(device, name, kind, shape);
        _created.Add(t);
        return t;
    }

    /// <summary>The tensors created after <paramref name="mark"/>.</summary>
    public IReadOnlyList<Tensor> Since(int mark) => _created.Skip(mark).ToList();

    /// <summary>
    /// Runs <paramref name="record"/>, which records the op writing <paramref name="output"/>, and returns the output;
    /// frees it if recording throws (the one-output form of a scope).
    /// </summary>
    public static Tensor Recorded(Tensor output, Action record)
    {
        try
        {
            record();
            return output;
        }
        catch
        {
            output.Dispose();
            throw;
        }
    }

    public void DisposeAll()
    {
        foreach (var t in _created)
        {
            t.Dispose();
        }
    }
}
