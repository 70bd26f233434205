using Mamba2.Vulkan;

namespace Mamba2.Model.Tensors;

/// <summary>
/// Scratch tensors kept by name and shape, so that consecutive runs recorded on one stream share them instead of
/// each allocating its own: the stream's hazard tracking puts a barrier between one run's last use and the next
/// run's first write. Own the pool by the stream (it frees the tensors after the submission).
/// </summary>
internal sealed class ScratchPool(GpuDevice device) : IDisposable
{
    private readonly Dictionary<string, Tensor> _tensors = [];

    public Tensor Get(string name, params int[] shape)
    {
        var key = $"{name}[{string.Join(',', shape)}]";
        if (!_tensors.TryGetValue(key, out var t))
        {
            t = _tensors[key] = Tensor.Empty(device, name, shape);
        }

        return t;
    }

    public void Dispose()
    {
        foreach (var t in _tensors.Values)
        {
            t.Dispose();
        }

        _tensors.Clear();
    }
}
