using Mamba2.Vulkan;

namespace Mamba2.Model.Tensors;

/// <summary>A dense row-major fp32 tensor in device memory.</summary>
public sealed class Tensor : IShapedArray, IDisposable
{
    private readonly bool _ownsBuffer;

    private Tensor(GpuDevice device, GpuBuffer<float> buffer, int[] shape, string name, bool ownsBuffer = true)
    {
        Device = device;
        Buffer = buffer;
        Shape = shape;
        Name = name;
        _ownsBuffer = ownsBuffer;
    }

    public GpuDevice Device { get; }

    public IReadOnlyList<int> Shape { get; }

    public string Name { get; }

    public int Rank => Shape.Count;

    public long Length => Buffer.Length;

    internal GpuBuffer<float> Buffer { get; }

    /// <summary>An uninitialized tensor of the given shape.</summary>
    public static Tensor Empty(GpuDevice device, string name, params int[] shape) => Empty(device, name, MemoryKind.Device, shape);

    /// <summary>
    /// An uninitialized tensor in memory of <paramref name="kind"/>: <see cref="MemoryKind.Readback"/> for a small
    /// result the host reads after every call (a loss), which kernels then write straight into host memory.
    /// </summary>
    internal static Tensor Empty(GpuDevice device, string name, MemoryKind kind, params int[] shape)
    {
        var length = ShapeOps.Elements(shape, name);
        return new Tensor(device, device.CreateBuffer<float>(length, name, kind), (int[])shape.Clone(), name);
    }

    /// <summary>A tensor holding <paramref name="data"/> (row-major, length = product of <paramref name="shape"/>).</summary>
    public static Tensor FromArray(GpuDevice device, string name, ReadOnlySpan<float> data, params int[] shape)
    {
        var length = ShapeOps.Elements(shape, name);
        if (data.Length != length)
        {
            throw new ArgumentException(
                $"{name}: shape {ShapeOps.Format(shape)} holds {length} elements but {data.Length} values were given.", nameof(data));
        }

        var t = Empty(device, name, shape);
        t.Buffer.Upload(data);
        return t;
    }

    /// <summary>
    /// The same elements under another shape (same count), sharing this tensor's memory: writes through either show
    /// in both. Disposing a view frees nothing; the view must not outlive this tensor.
    /// </summary>
    public Tensor View(params int[] shape)
    {
        var length = ShapeOps.Elements(shape, Name);
        if (length != Length)
        {
            throw new ArgumentException($"{Name}: a view of {ShapeOps.Format(Shape)} must keep {Length} elements, got shape {ShapeOps.Format(shape)}.", nameof(shape));
        }

        return new Tensor(Device, Buffer, (int[])shape.Clone(), Name, ownsBuffer: false);
    }

    public float[] ToArray() => Buffer.Download();

    public void CopyFrom(ReadOnlySpan<float> data)
    {
        if (data.Length != Length)
        {
            throw new ArgumentException($"{Name} holds {Length} elements; {data.Length} values were given.", nameof(data));
        }

        Buffer.Upload(data);
    }

    public override string ToString() => $"{Name}{ShapeOps.Format(Shape)}";

    public void Dispose()
    {
        if (_ownsBuffer)
        {
            Buffer.Dispose();
        }
    }
}
