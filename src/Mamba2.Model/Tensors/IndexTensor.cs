using Mamba2.Vulkan;

namespace Mamba2.Model.Tensors;

/// <summary>
/// A dense row-major int32 tensor in device memory: token ids and targets. It keeps the host copy it was made from,
/// so ops can check ranges and plan scatters without reading the device back.
/// </summary>
public sealed class IndexTensor : IDisposable
{
    private readonly int[] _host;

    private IndexTensor(GpuDevice device, GpuBuffer<int> buffer, int[] shape, string name, int[] host)
    {
        Device = device;
        Buffer = buffer;
        Shape = shape;
        Name = name;
        _host = host;
    }

    /// <summary>The values, as uploaded.</summary>
    public ReadOnlySpan<int> Values => _host;

    public GpuDevice Device { get; }

    public IReadOnlyList<int> Shape { get; }

    public string Name { get; }

    public long Length => Buffer.Length;

    internal GpuBuffer<int> Buffer { get; }

    /// <summary>A tensor holding <paramref name="data"/> (row-major, length = product of <paramref name="shape"/>).</summary>
    public static IndexTensor FromArray(GpuDevice device, string name, ReadOnlySpan<int> data, params int[] shape)
    {
        var length = ShapeOps.Elements(shape, name);
        if (data.Length != length)
        {
            throw new ArgumentException(
                $"{name}: shape {ShapeOps.Format(shape)} holds {length} elements but {data.Length} values were given.", nameof(data));
        }

        var t = new IndexTensor(device, device.CreateBuffer<int>(length, name), (int[])shape.Clone(), name, data.ToArray());
        t.Buffer.Upload(data);
        return t;
    }

    public int[] ToArray() => Buffer.Download();

    public override string ToString() => $"{Name}{ShapeOps.Format(Shape)} (int32)";

    public void Dispose() => Buffer.Dispose();
}
