using System.Runtime.InteropServices;
using Mamba2.Model.Tensors;
using Mamba2.Vulkan;

namespace Mamba2.Model.Ops;

/// <summary>Reordering along the sequence axis (dim 1) of (b, L, ...) tensors.</summary>
public static class Sequence
{
    [StructLayout(LayoutKind.Sequential)]
    private readonly record struct Push(uint Batch, uint SeqLen, uint Row, int Offset);

    /// <summary>
    /// torch.flip(input, dims=[1]): out[b, t, ...] = input[b, L - 1 - t, ...], into a new tensor, a batch slice at a
    /// time. The SSD never needs it (its kernels walk the sequence backwards); it serves the naive bidirectional
    /// composition that benchmarks compare against, and users' own reversed-direction code.
    /// </summary>
    public static Tensor Flip(Tensor input, CommandStream? stream = null)
    {
        ArgumentNullException.ThrowIfNull(input);
        if (input.Rank < 2)
        {
            throw new ArgumentException($"Sequence.Flip: input must be (b, L, ...), got {ShapeOps.Format(input.Shape)}.", nameof(input));
        }

        return Moved(input, input.Name + ".flip", flip: true, 0, stream, "Sequence.Flip", OpTuning.Of(input.Device).MaxBindingBytes);
    }

    /// <summary>out[b, t, ...] = input[b, t + offset, ...], zeros shifted in (the Hydra form's per-scan gradients).</summary>
    internal static Tensor Shifted(CommandStream st, Tensor input, string name, int offset, string op, ulong? maxRangeBytes) =>
        Moved(input, name, flip: false, offset, st, op, maxRangeBytes);

    /// <summary>seq_shift.comp into a new tensor, a batch slice at a time.</summary>
    private static Tensor Moved(Tensor input, string name, bool flip, int offset, CommandStream? stream, string op, ulong? maxRangeBytes)
    {
        var device = input.Device;
        var output = Tensor.Empty(device, name, [.. input.Shape]);
        return TensorScope.Recorded(output, () => Shaders.RunIn(device, stream, st =>
        {
            var perBatch = input.Length / input.Shape[0];
            var local = Shaders.Local1D(device);
            foreach (var pc in Shaders.Pieces(device, op, input.Shape[0], [perBatch], maxRangeBytes))
            {
                st.Dispatch(device.GetKernel(Shaders.SeqShift, new SeqShiftSpec(local, flip)), (Shaders.Groups1D(device, pc.Count * perBatch, local), 1, 1),
                    new Push((uint)pc.Count, (uint)input.Shape[1], (uint)(perBatch / input.Shape[1]), offset), pc.Of(input), pc.Of(output));
            }
        }));
    }
}
