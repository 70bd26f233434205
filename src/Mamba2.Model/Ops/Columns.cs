using System.Runtime.InteropServices;
using Mamba2.Model.Tensors;
using Mamba2.Vulkan;

namespace Mamba2.Model.Ops;

/// <summary>Column ranges of row-major matrices (the last dimension): split a fused projection, merge gradients back.</summary>
public static class Columns
{
    [StructLayout(LayoutKind.Sequential)]
    private readonly record struct Push(uint Rows, uint Width, uint SrcCols, uint SrcCol, uint DstCols, uint DstCol);

    /// <summary>
    /// dst[..., dstCol + j] = src[..., srcCol + j] for j &lt; width; leading dimensions flattened, equal in both. src
    /// may be bf16 (in_proj's output in bf16; widened exactly), dst is float32.
    /// </summary>
    public static void Copy(Tensor src, int srcCol, Tensor dst, int dstCol, int width, CommandStream? stream = null) =>
        Copy(src, srcCol, dst, dstCol, width, stream, null);

    /// <summary>
    /// The same, folding the largest |value| copied into <paramref name="absMaxInto"/> (a packed operand's scale word
    /// that dst's other writers fold into too: <see cref="TensorCoreGemm.PackFolded"/>).
    /// </summary>
    internal static void Copy(Tensor src, int srcCol, Tensor dst, int dstCol, int width, CommandStream? stream, GpuBuffer<uint>? absMaxInto)
    {
        const string op = "Columns.Copy";
        var (sc, dc) = (src.Shape[^1], dst.Shape[^1]);
        Check(op, src, srcCol, dst.Length / dc, dc, dstCol, width, nameof(dst));
        ShapeOps.ExpectSameDevice(op, src, dst);
        Shaders.EnsureBindable(op, src, dst);
        var device = src.Device;
        var words = (width | sc | srcCol | dc | dstCol) % 4 == 0;   // 16-byte moves where every row stays aligned
        Record(device, stream, Shaders.CopyColumnsOf(src.DType == TensorDType.BF16, bf16Dst: false), words, src, srcCol, dc, dstCol, width, dst.Buffer, absMaxInto);
    }

    /// <summary>
    /// The same into columns of a bf16 packed operand (<paramref name="dst"/>'s own columns, all of them), each value
    /// rounded to nearest even: a gradient that only tensor-core products read.
    /// </summary>
    internal static void Copy(Tensor src, int srcCol, PackedColumns dst, CommandStream? stream = null)
    {
        const string op = "Columns.Copy (bf16)";
        Check(op, src, srcCol, dst.Rows, dst.Stride, dst.Start, dst.Width, nameof(dst));
        ShapeOps.ExpectSameDevice(op, src, dst.Packed);
        Shaders.EnsureBindable(op, src);
        dst.ExpectWritable(op);
        var device = src.Device;

        var words = (dst.Width | src.Shape[^1] | srcCol) % 4 == 0;
        Record(device, stream, Shaders.CopyColumnsOf(src.DType == TensorDType.BF16, bf16Dst: true), words, src, srcCol, dst.Stride, dst.Start, dst.Width, dst.Words);
    }

    private static void Check(string op, Tensor src, int srcCol, long dstRows, int dc, int dstCol, int width, string dstName)
    {
        var sc = src.Shape[^1];
        if (dstRows != src.Length / sc)
        {
            throw new ArgumentException($"{op}: src {ShapeOps.Format(src.Shape)} has {src.Length / sc} rows, {dstName} {dstRows}.", dstName);
        }

        if (width <= 0 || srcCol < 0 || dstCol < 0 || srcCol + width > sc || dstCol + width > dc)
        {
            throw new ArgumentOutOfRangeException(nameof(width), $"{op}: columns [{srcCol}, {srcCol + width}) of {sc} into [{dstCol}, {dstCol + width}) of {dc}.");
        }
    }

    private static void Record(GpuDevice device, CommandStream? stream, KernelSource<CopyColumnsSpec> kernel, bool words, Tensor src, int srcCol, int dc, int dstCol,
        int width, BufferBinding dst, GpuBuffer<uint>? absMaxInto = null)
    {
        var sc = src.Shape[^1];
        var rows = src.Length / sc;
        var local = Shaders.Local1D(device);
        Shaders.RunIn(device, stream, st => st.Dispatch(device.GetKernel(kernel, new CopyColumnsSpec(local, words, absMaxInto is not null)),
            (Shaders.Groups1D(device, rows * width / (words ? 4 : 1), local), 1, 1), new Push((uint)rows, (uint)width, (uint)sc, (uint)srcCol, (uint)dc, (uint)dstCol),
            Shaders.Slice(src, 0, src.Length, src.DType == TensorDType.BF16), dst, absMaxInto ?? dst));
    }

    /// <summary>
    /// src's columns cut, in order, into <paramref name="parts"/> (each part's last dimension is its width; together
    /// they cover src's): the fused projection split into z, xBC and dt.
    /// </summary>
    public static void Split(CommandStream st, Tensor src, params Tensor[] parts) => Walk(src, parts, (part, at) => Copy(src, at, part, 0, part.Shape[^1], st));

    /// <summary>The reverse of <see cref="Split"/>: <paramref name="parts"/> side by side into dst's columns.</summary>
    public static void Concat(CommandStream st, Tensor dst, params Tensor[] parts) => Walk(dst, parts, (part, at) => Copy(part, 0, dst, at, part.Shape[^1], st));

    private static void Walk(Tensor whole, Tensor[] parts, Action<Tensor, int> copy)
    {
        var total = parts.Sum(p => p.Shape[^1]);
        if (total != whole.Shape[^1])
        {
            throw new ArgumentException($"Columns: parts of widths {string.Join(" + ", parts.Select(p => p.Shape[^1]))} = {total} do not cover {whole.Name} {ShapeOps.Format(whole.Shape)}.", nameof(parts));
        }

        var at = 0;
        foreach (var part in parts)
        {
            copy(part, at);
            at += part.Shape[^1];
        }
    }
}
