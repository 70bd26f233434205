using Mamba2.Model.Tensors;

namespace Mamba2.Model.IO;

/// <summary>One header entry of a safetensors file; offsets are relative to the start of the data region.</summary>
public sealed class TensorInfo
{
    private readonly int[] _shape;

    internal TensorInfo(string name, SafetensorsDType dtype, int[] shape, long begin, long end, long elementCount)
    {
        Name = name;
        DType = dtype;
        _shape = shape;
        Begin = begin;
        End = end;
        ElementCount = elementCount;
    }

    public string Name { get; }

    public SafetensorsDType DType { get; }

    /// <summary>A copy of the shape (empty for a scalar).</summary>
    public int[] Shape => (int[])_shape.Clone();

    public long ElementCount { get; }

    /// <summary>First byte of the tensor, relative to the data region.</summary>
    public long Begin { get; }

    /// <summary>One past the last byte, relative to the data region.</summary>
    public long End { get; }

    public long ByteLength => End - Begin;

    internal int[] ShapeUnsafe => _shape;

    public override string ToString() => $"{Name} {DType.HeaderName()}{ShapeOps.Format(_shape)} [{Begin}, {End})";
}
