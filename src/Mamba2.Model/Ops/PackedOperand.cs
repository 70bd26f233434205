using Mamba2.Model.IO;
using Mamba2.Model.Tensors;
using Mamba2.Vulkan;

namespace Mamba2.Model.Ops;

/// <summary>
/// A matrix rounded once to a tensor-core GEMM's 16-bit operands (<see cref="Gemm.Pack"/>), for a tensor that
/// several products read (an activation in the forward and again in the weight gradient, a gradient that feeds both
/// the input and the weight gradient): each product then reads half the bytes and converts nothing. f16 copies (bf16
/// values as f16 too) carry the power of two they were scaled by (<see cref="OperandStaging.Converted"/>); bf16 ones
/// are unscaled.
/// The values are exactly those a product with the fp32 tensor would have multiplied.
/// </summary>
public sealed class PackedOperand : IShapedArray, IDisposable
{
    private readonly bool _owns = true;

    internal PackedOperand(GpuDevice device, string name, int[] shape, GemmOperands operands, GpuBuffer<uint> words, GpuBuffer<uint> scaleBits)
    {
        Device = device;
        Name = name;
        Shape = shape;
        Operands = operands;
        Words = words;
        ScaleBits = scaleBits;
    }

    public GpuDevice Device { get; }

    public string Name { get; }

    public IReadOnlyList<int> Shape { get; }

    public int Rank => Shape.Count;

    /// <summary>F16, Bf16 or Bf16ViaF16.</summary>
    public GemmOperands Operands { get; }

    /// <summary>Elements (the packed tensor's), two to a 32-bit word.</summary>
    public long Length => ShapeOps.Elements(Shape, Name);

    /// <summary>The elements as 16-bit operands, row-major as the tensor they came from.</summary>
    internal GpuBuffer<uint> Words { get; }

    /// <summary>One word: the float bits of the largest |x| the scale was taken from (0: scale 1).</summary>
    internal GpuBuffer<uint> ScaleBits { get; }

    /// <summary>Bytes of device memory this copy holds.</summary>
    public ulong SizeBytes => Words.SizeBytes + ScaleBits.SizeBytes;

    public override string ToString() => $"{Name}{ShapeOps.Format(Shape)} as {Operands}";

    /// <summary>The values as fp32 on the host (bf16 widened; f16 divided by its scale, exactly): reads the device.</summary>
    public float[] ToArray()
    {
        var words = Words.Download();
        var scaled = Operands.Scaled();
        var scale = scaled ? OperandScale(BitConverter.UInt32BitsToSingle(ScaleBits.Download()[0])) : 1f;
        var values = new float[Length];
        for (long e = 0; e < values.Length; e++)
        {
            var bits = (ushort)(words[e / 2] >> (int)(16 * (e % 2)));
            values[e] = scaled ? (float)BitConverter.UInt16BitsToHalf(bits) / scale : BFloat16Bits.ToSingle(bits);
        }

        return values;
    }

    /// <summary>shaders/include/operand_scale.glsl's power of two for a tensor whose largest |x| is <paramref name="absmax"/>.</summary>
    private static float OperandScale(float absmax) =>
        absmax == 0f || !float.IsFinite(absmax) ? 1f : MathF.ScaleB(1f, Math.Clamp(14 - MathF.ILogB(absmax), -126, 126));

    /// <summary>The same words under another shape of as many elements; it frees nothing (this copy owns them).</summary>
    internal PackedOperand View(params int[] shape)
    {
        if (ShapeOps.Elements(shape, Name) != Length)
        {
            throw new ArgumentException($"{this} has {Length} elements, not the {ShapeOps.Elements(shape, Name)} of {ShapeOps.Format(shape)}.", nameof(shape));
        }

        return new PackedOperand(Device, Name, shape, Operands, Words, ScaleBits, owns: false);
    }

    private PackedOperand(GpuDevice device, string name, int[] shape, GemmOperands operands, GpuBuffer<uint> words, GpuBuffer<uint> scaleBits, bool owns)
        : this(device, name, shape, operands, words, scaleBits)
    {
        _owns = owns;
    }

    public void Dispose()
    {
        if (_owns)
        {
            Words.Dispose();
            ScaleBits.Dispose();
        }
    }
}

/// <summary>An operand of <see cref="Gemm.Run"/>: an fp32 tensor, or one already packed to 16-bit operands.</summary>
public readonly struct GemmInput
{
    private GemmInput(Tensor? tensor, PackedOperand? packed)
    {
        Tensor = tensor;
        Packed = packed;
    }

    /// <summary>The fp32 tensor, when that is what was given.</summary>
    public Tensor? Tensor { get; }

    /// <summary>The packed copy, when that is what was given.</summary>
    public PackedOperand? Packed { get; }

    /// <summary>Either, for the shape checks.</summary>
    public IShapedArray Shaped => (IShapedArray?)Tensor ?? Packed ?? throw new InvalidOperationException("GemmInput: empty (default) operand.");

    public static implicit operator GemmInput(Tensor tensor) => new(tensor ?? throw new ArgumentNullException(nameof(tensor)), null);

    public static implicit operator GemmInput(PackedOperand packed) => new(null, packed ?? throw new ArgumentNullException(nameof(packed)));
}
