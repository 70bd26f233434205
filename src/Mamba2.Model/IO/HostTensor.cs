using System.Buffers.Binary;
using Mamba2.Model.Tensors;

namespace Mamba2.Model.IO;

/// <summary>
/// A named tensor in host memory, held as the raw little-endian, row-major bytes of its safetensors dtype.
/// Rank 0 (an empty shape) is a scalar with one element.
/// </summary>
public sealed class HostTensor
{
    private readonly int[] _shape;
    private readonly byte[] _data;

    /// <summary>Takes ownership of <paramref name="data"/>, whose length the caller has already checked.</summary>
    internal HostTensor(string name, SafetensorsDType dtype, int[] shape, byte[] data, long elementCount)
    {
        Name = name;
        DType = dtype;
        _shape = shape;
        _data = data;
        ElementCount = elementCount;
    }

    public string Name { get; }

    public SafetensorsDType DType { get; }

    /// <summary>A copy of the shape, so callers cannot change this tensor through it.</summary>
    public int[] Shape => (int[])_shape.Clone();

    public int Rank => _shape.Length;

    public long ElementCount { get; }

    /// <summary>The raw little-endian bytes, <see cref="ElementCount"/> * element size long.</summary>
    public ReadOnlyMemory<byte> Data => _data;

    /// <summary>A tensor holding a copy of <paramref name="data"/>, interpreted as <paramref name="dtype"/>.</summary>
    public static HostTensor FromBytes(string name, SafetensorsDType dtype, ReadOnlySpan<byte> data, params int[] shape)
    {
        ArgumentNullException.ThrowIfNull(name);
        var count = CheckedElementCount(name, shape);
        var expected = count * dtype.ElementSize();
        if (data.Length != expected)
        {
            throw new ArgumentException(
                $"{name}: {dtype.HeaderName()} shape {ShapeOps.Format(shape)} needs {expected} bytes but {data.Length} were given.",
                nameof(data));
        }

        return new HostTensor(name, dtype, (int[])shape.Clone(), data.ToArray(), count);
    }

    public static HostTensor FromFloat64(string name, ReadOnlySpan<double> data, params int[] shape)
    {
        var (t, bytes) = Allocate(name, SafetensorsDType.F64, shape, data.Length);
        var dst = bytes.AsSpan();
        for (var i = 0; i < data.Length; i++)
        {
            BinaryPrimitives.WriteDoubleLittleEndian(dst[(i * 8)..], data[i]);
        }

        return t;
    }

    public static HostTensor FromFloat32(string name, ReadOnlySpan<float> data, params int[] shape)
    {
        var (t, bytes) = Allocate(name, SafetensorsDType.F32, shape, data.Length);
        var dst = bytes.AsSpan();
        for (var i = 0; i < data.Length; i++)
        {
            BinaryPrimitives.WriteSingleLittleEndian(dst[(i * 4)..], data[i]);
        }

        return t;
    }

    public static HostTensor FromInt64(string name, ReadOnlySpan<long> data, params int[] shape)
    {
        var (t, bytes) = Allocate(name, SafetensorsDType.I64, shape, data.Length);
        var dst = bytes.AsSpan();
        for (var i = 0; i < data.Length; i++)
        {
            BinaryPrimitives.WriteInt64LittleEndian(dst[(i * 8)..], data[i]);
        }

        return t;
    }

    public static HostTensor FromInt32(string name, ReadOnlySpan<int> data, params int[] shape)
    {
        var (t, bytes) = Allocate(name, SafetensorsDType.I32, shape, data.Length);
        var dst = bytes.AsSpan();
        for (var i = 0; i < data.Length; i++)
        {
            BinaryPrimitives.WriteInt32LittleEndian(dst[(i * 4)..], data[i]);
        }

        return t;
    }

    /// <summary>The values as float32 (F64 and large integers round to nearest).</summary>
    public float[] ToFloat32()
    {
        var src = _data.AsSpan();
        var result = new float[ElementCount];
        for (var i = 0; i < result.Length; i++)
        {
            result[i] = DType switch
            {
                SafetensorsDType.F32 => BinaryPrimitives.ReadSingleLittleEndian(src[(i * 4)..]),
                SafetensorsDType.F64 => (float)BinaryPrimitives.ReadDoubleLittleEndian(src[(i * 8)..]),
                SafetensorsDType.F16 => (float)BinaryPrimitives.ReadHalfLittleEndian(src[(i * 2)..]),
                SafetensorsDType.BF16 => BFloat16Bits.ToSingle(BinaryPrimitives.ReadUInt16LittleEndian(src[(i * 2)..])),
                SafetensorsDType.I32 => BinaryPrimitives.ReadInt32LittleEndian(src[(i * 4)..]),
                SafetensorsDType.I64 => BinaryPrimitives.ReadInt64LittleEndian(src[(i * 8)..]),
                _ => throw UnknownDType(),
            };
        }

        return result;
    }

    /// <summary>The values as float64 (exact for every dtype except I64 beyond 2^53).</summary>
    public double[] ToFloat64()
    {
        var src = _data.AsSpan();
        var result = new double[ElementCount];
        for (var i = 0; i < result.Length; i++)
        {
            result[i] = DType switch
            {
                SafetensorsDType.F64 => BinaryPrimitives.ReadDoubleLittleEndian(src[(i * 8)..]),
                SafetensorsDType.F32 => BinaryPrimitives.ReadSingleLittleEndian(src[(i * 4)..]),
                SafetensorsDType.F16 => (double)BinaryPrimitives.ReadHalfLittleEndian(src[(i * 2)..]),
                SafetensorsDType.BF16 => BFloat16Bits.ToSingle(BinaryPrimitives.ReadUInt16LittleEndian(src[(i * 2)..])),
                SafetensorsDType.I32 => BinaryPrimitives.ReadInt32LittleEndian(src[(i * 4)..]),
                SafetensorsDType.I64 => BinaryPrimitives.ReadInt64LittleEndian(src[(i * 8)..]),
                _ => throw UnknownDType(),
            };
        }

        return result;
    }

    /// <summary>The values of an integer (I32 or I64) tensor.</summary>
    public long[] ToInt64()
    {
        if (DType is not (SafetensorsDType.I32 or SafetensorsDType.I64))
        {
            throw new InvalidOperationException(
                $"{Name} is {DType.HeaderName()}; ToInt64 reads integer tensors (I32, I64) only, use ToFloat32 or ToFloat64.");
        }

        var src = _data.AsSpan();
        var result = new long[ElementCount];
        for (var i = 0; i < result.Length; i++)
        {
            result[i] = DType == SafetensorsDType.I64
                ? BinaryPrimitives.ReadInt64LittleEndian(src[(i * 8)..])
                : BinaryPrimitives.ReadInt32LittleEndian(src[(i * 4)..]);
        }

        return result;
    }

    /// <summary>The same values under another name (the bytes are shared: neither is ever written to).</summary>
    public HostTensor Renamed(string name) => new(name, DType, _shape, _data, ElementCount);

    /// <summary>A copy in a floating-point dtype, rounded to nearest even (NaN stays NaN).</summary>
    public HostTensor Convert(SafetensorsDType target)
    {
        if (target == DType)
        {
            return new HostTensor(Name, DType, _shape, (byte[])_data.Clone(), ElementCount);
        }

        switch (target)
        {
            case SafetensorsDType.F64:
                return FromFloat64(Name, ToFloat64(), _shape);
            case SafetensorsDType.F32:
                return FromFloat32(Name, ToFloat32(), _shape);
            case SafetensorsDType.F16:
                {
                    var (t, bytes) = Allocate(Name, target, _shape, ElementCount);
                    var dst = bytes.AsSpan();
                    if (DType == SafetensorsDType.F64)
                    {
                        var values = ToFloat64();
                        for (var i = 0; i < values.Length; i++)
                        {
                            BinaryPrimitives.WriteHalfLittleEndian(dst[(i * 2)..], (Half)values[i]);
                        }
                    }
                    else
                    {
                        // Every other source is exact in float32 over F16's range, so one rounding happens here.
                        var values = ToFloat32();
                        for (var i = 0; i < values.Length; i++)
                        {
                            BinaryPrimitives.WriteHalfLittleEndian(dst[(i * 2)..], (Half)values[i]);
                        }
                    }

                    return t;
                }

            case SafetensorsDType.BF16:
                {
                    var (t, bytes) = Allocate(Name, target, _shape, ElementCount);
                    var dst = bytes.AsSpan();
                    if (DType == SafetensorsDType.F64)
                    {
                        var values = ToFloat64();
                        for (var i = 0; i < values.Length; i++)
                        {
                            BinaryPrimitives.WriteUInt16LittleEndian(dst[(i * 2)..], BFloat16Bits.FromDouble(values[i]));
                        }
                    }
                    else
                    {
                        var values = ToFloat32();
                        for (var i = 0; i < values.Length; i++)
                        {
                            BinaryPrimitives.WriteUInt16LittleEndian(dst[(i * 2)..], BFloat16Bits.FromSingle(values[i]));
                        }
                    }

                    return t;
                }

            default:
                throw new ArgumentException(
                    $"{Name}: Convert produces floating-point dtypes (F64, F32, F16, BF16), not {target.HeaderName()}.", nameof(target));
        }
    }

    public override string ToString() => $"{Name} {DType.HeaderName()}{ShapeOps.Format(_shape)}";

    /// <summary>Product of <paramref name="shape"/> (1 for a scalar), or null if a dimension is negative or it overflows.</summary>
    internal static long? TryCountElements(ReadOnlySpan<int> shape)
    {
        long n = 1;
        foreach (var d in shape)
        {
            if (d < 0)
            {
                return null;
            }

            try
            {
                n = checked(n * d);
            }
            catch (OverflowException)
            {
                return null;
            }
        }

        return n;
    }

    private static long CheckedElementCount(string name, int[] shape)
    {
        ArgumentNullException.ThrowIfNull(shape);
        return TryCountElements(shape)
            ?? throw new ArgumentException($"{name}: shape {ShapeOps.Format(shape)} has a negative dimension or too many elements.", nameof(shape));
    }

    private static (HostTensor Tensor, byte[] Bytes) Allocate(string name, SafetensorsDType dtype, int[] shape, long given)
    {
        ArgumentNullException.ThrowIfNull(name);
        var count = CheckedElementCount(name, shape);
        if (given != count)
        {
            throw new ArgumentException(
                $"{name}: shape {ShapeOps.Format(shape)} holds {count} elements but {given} values were given.", nameof(shape));
        }

        var size = count * dtype.ElementSize();
        if (size > Array.MaxLength)
        {
            throw new ArgumentException($"{name}: {size} bytes of {dtype.HeaderName()} exceed what one host array can hold.", nameof(shape));
        }

        var bytes = new byte[size];
        return (new HostTensor(name, dtype, (int[])shape.Clone(), bytes, count), bytes);
    }

    private InvalidOperationException UnknownDType() => new($"{Name}: unknown dtype {DType}.");
}
