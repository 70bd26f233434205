using Mamba2.Model.Tensors;
using Mamba2.Vulkan;

namespace Mamba2.Model.Ops;

/// <summary>
/// Columns [<see cref="Start"/>, <see cref="Start"/> + <see cref="Width"/>) of a bf16 <see cref="PackedOperand"/>'s
/// rows: where a backward op writes a gradient that only tensor-core products read (the fused projection's
/// gradient), stored straight as their bf16 operands (the <c>_out_bf16</c> kernel variants), so no fp32 copy is
/// written and no packing pass reads it. The kernels bind the whole copy and index it from its first element.
/// </summary>
internal readonly record struct PackedColumns
{
    public PackedColumns(PackedOperand packed, int start, int width)
    {
        ArgumentNullException.ThrowIfNull(packed);
        if (packed.Operands != GemmOperands.Bf16)
        {
            throw new ArgumentException($"{packed} holds {packed.Operands} operands; outputs are written in place only as bf16.", nameof(packed));
        }

        ShapeOps.ExpectColumns(packed.Name, packed.Shape[^1], start, width);

        Packed = packed;
        Start = start;
        Width = width;
    }

    public PackedOperand Packed { get; }

    public int Start { get; }

    public int Width { get; }

    /// <summary>Elements from one row to the next.</summary>
    public int Stride => Packed.Shape[^1];

    public long Rows => Packed.Length / Stride;

    /// <summary>The copy's words, bound whole.</summary>
    public BufferBinding Words => Packed.Words;

    /// <summary>
    /// Whether <paramref name="device"/> can run the kernels that write these columns: 16-bit storage, Vulkan 1.3
    /// SPIR-V, and the whole copy in one binding (its element offsets stay within 32 bits).
    /// </summary>
    public static bool Supported(GpuDevice device, long elements) =>
        device.Capabilities.Storage16Bit && device.Info.ApiVersion >= Silk.NET.Vulkan.Vk.Version13
        && (ulong)elements * 2 <= device.Capabilities.MaxStorageBufferRange && elements <= uint.MaxValue;

    /// <summary>
    /// Whether a backward gradient of <paramref name="elements"/> that only <paramref name="precision"/>'s products
    /// read is stored straight as their operands by the kernels that form it: where those products take bf16
    /// operands and the device can write them.
    /// </summary>
    public static bool WrittenAsOperands(GpuDevice device, Precision precision, long elements) =>
        precision.Operands(device) == GemmOperands.Bf16 && Supported(device, elements);

    /// <summary>Throws <see cref="MissingFeatureException"/> where the copy's device cannot run the kernels that write it.</summary>
    public void ExpectWritable(string op)
    {
        if (!Supported(Packed.Device, Packed.Length))
        {
            throw new MissingFeatureException($"{op}: {Packed.Device.Name} cannot write {this} (16-bit storage, Vulkan 1.3, one binding).");
        }
    }

    public override string ToString() => $"{Packed.Name}[..., {Start}:{Start + Width}] as bf16";
}
