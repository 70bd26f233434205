using System.Runtime.InteropServices;
using Mamba2.Model.Tensors;
using Mamba2.Vulkan;

namespace Mamba2.Model.Ops;

/// <summary>A Linear layer's bias over the rows of a matrix (rows, n): added in place, and its gradient (fixed-order sums).</summary>
public static class Bias
{
    [StructLayout(LayoutKind.Sequential)]
    private readonly record struct Push(uint Rows, uint Cols);

    private const uint BlockRows = 256;

    /// <summary>y[r, :] += bias.</summary>
    public static void Add(CommandStream st, Tensor y, Tensor bias)
    {
        var cols = y.Shape[^1];
        ShapeOps.Expect(bias, "bias", $"Bias (y is {ShapeOps.Format(y.Shape)})", cols);
        Shaders.EnsureBindable("Bias", y, bias);
        var device = y.Device;
        var local = Shaders.Local1D(device);
        st.Dispatch(device.GetKernel(Shaders.BiasAdd, new LocalSize(local)), (Shaders.Groups1D(device, y.Length, local), 1, 1),
            new Push((uint)(y.Length / cols), (uint)cols), y.Buffer, bias.Buffer);
    }

    /// <summary>grad[j] = sum over the rows of dy[r, j].</summary>
    public static void Grad(CommandStream st, Tensor dy, Tensor grad)
    {
        var cols = (uint)dy.Shape[^1];
        ShapeOps.Expect(grad, "grad", "Bias", (int)cols);
        Shaders.EnsureBindable("Bias", dy);
        var rows = (uint)(dy.Length / cols);
        var blocks = (rows + BlockRows - 1) / BlockRows;
        var part = st.Own(Tensor.Empty(dy.Device, "bias_grad_part", (int)blocks, (int)cols));
        Reductions.Blocks(st, dy.Buffer, part.Buffer, 1, rows, cols, 1, BlockRows);
        Reductions.Sum(st, part.Buffer, grad.Buffer, blocks, cols);
    }
}
