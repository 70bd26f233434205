using Mamba2.Model.IO;
using Mamba2.Vulkan;

namespace Mamba2.Model.Tensors;

/// <summary>A dense row-major tensor in device memory: fp32, or bf16 where an op says it takes bf16 (<see cref="DType"/>).</summary>
public sealed class Tensor : IShapedArray, IDisposable
{
    private readonly bool _ownsBuffer;

    private Tensor(GpuDevice device, GpuBuffer storage, TensorDType dtype, long length, int[] shape, string name, bool ownsBuffer = true)
    {
        Device = device;
        Storage = storage;
        DType = dtype;
        Length = length;
        Shape = shape;
        Name = name;
        _ownsBuffer = ownsBuffer;
    }

    public GpuDevice Device { get; }

    public IReadOnlyList<int> Shape { get; }

    public string Name { get; }

    public int Rank => Shape.Count;

    /// <summary>Elements.</summary>
    public long Length { get; }

    public TensorDType DType { get; }

    /// <summary>Bytes of device memory the elements take.</summary>
    public ulong SizeBytes => (ulong)Length * (ulong)DType.Bytes();

    /// <summary>The elements' memory, whatever their type.</summary>
    internal GpuBuffer Storage { get; }

    /// <summary>
    /// The fp32 elements: what every fp32 kernel binds. A bf16 tensor has none, so an op that takes fp32 only and was
    /// given one stops here, before anything is recorded.
    /// </summary>
    internal GpuBuffer<float> Buffer => Storage as GpuBuffer<float>
        ?? throw new ArgumentException($"{Name} is a {DType.Name()} tensor; this op takes float32 tensors only.", Name);

    /// <summary>An uninitialized fp32 tensor of the given shape.</summary>
    public static Tensor Empty(GpuDevice device, string name, params int[] shape) => Empty(device, name, MemoryKind.Device, shape);

    /// <summary>An uninitialized tensor of the given element type and shape (bf16 needs a device with 16-bit storage).</summary>
    public static Tensor Empty(GpuDevice device, string name, TensorDType dtype, params int[] shape)
    {
        if (dtype == TensorDType.F32)
        {
            return Empty(device, name, shape);
        }

        if (!device.Capabilities.Storage16Bit)
        {
            throw new MissingFeatureException($"{name}: {device.Name} has no 16-bit storage (storageBuffer16BitAccess), which bf16 tensors need.");
        }

        var length = ShapeOps.Elements(shape, name);
        return new Tensor(device, device.CreateBuffer<ushort>(length, name), dtype, length, (int[])shape.Clone(), name);
    }

    /// <summary>
    /// An uninitialized tensor in memory of <paramref name="kind"/>: <see cref="MemoryKind.Readback"/> for a small
    /// result the host reads after every call (a loss), which kernels then write straight into host memory.
    /// </summary>
    internal static Tensor Empty(GpuDevice device, string name, MemoryKind kind, params int[] shape)
    {
        var length = ShapeOps.Elements(shape, name);
        return new Tensor(device, device.CreateBuffer<float>(length, name, kind), TensorDType.F32, length, (int[])shape.Clone(), name);
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
    /// A tensor of <paramref name="dtype"/> holding <paramref name="data"/>: as given for fp32, rounded to nearest even
    /// for bf16 (as PyTorch's <c>.to(torch.bfloat16)</c>).
    /// </summary>
    public static Tensor FromArray(GpuDevice device, string name, ReadOnlySpan<float> data, TensorDType dtype, params int[] shape)
    {
        if (dtype == TensorDType.F32)
        {
            return FromArray(device, name, data, shape);
        }

        var length = ShapeOps.Elements(shape, name);
        if (data.Length != length)
        {
            throw new ArgumentException(
                $"{name}: shape {ShapeOps.Format(shape)} holds {length} elements but {data.Length} values were given.", nameof(data));
        }

        var t = Empty(device, name, dtype, shape);
        t.CopyFrom(data);
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

        return new Tensor(Device, Storage, DType, Length, (int[])shape.Clone(), Name, ownsBuffer: false);
    }

    /// <summary>The elements as fp32 (bf16 widened, exactly).</summary>
    public float[] ToArray()
    {
        if (DType == TensorDType.F32)
        {
            return Buffer.Download();
        }

        var bits = new ushort[Length];
        Storage.Download<ushort>(bits);
        var values = new float[Length];
        for (long i = 0; i < values.Length; i++)
        {
            values[i] = BFloat16Bits.ToSingle(bits[i]);
        }

        return values;
    }

    /// <summary>Overwrites the elements with <paramref name="data"/>, rounded to nearest even for a bf16 tensor.</summary>
    public void CopyFrom(ReadOnlySpan<float> data)
    {
        if (data.Length != Length)
        {
            throw new ArgumentException($"{Name} holds {Length} elements; {data.Length} values were given.", nameof(data));
        }

        if (DType == TensorDType.F32)
        {
            Buffer.Upload(data);
            return;
        }

        var bits = new ushort[Length];
        for (var i = 0; i < bits.Length; i++)
        {
            bits[i] = BFloat16Bits.FromSingle(data[i]);
        }

        Storage.Upload<ushort>(bits);
    }

    public override string ToString() => $"{Name}{ShapeOps.Format(Shape)}{(DType == TensorDType.F32 ? "" : " " + DType.Name())}";

    public void Dispose()
    {
        if (_ownsBuffer)
        {
            Storage.Dispose();
        }
    }
}
