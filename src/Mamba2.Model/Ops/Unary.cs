using System.Runtime.InteropServices;
using Mamba2.Model.Tensors;
using Mamba2.Vulkan;

namespace Mamba2.Model.Ops;

/// <summary>Elementwise functions of one tensor.</summary>
public static class Unary
{
    [StructLayout(LayoutKind.Sequential)]
    private readonly record struct NegExpPush(uint N);

    /// <summary>y = -exp(x), elementwise (A = -exp(A_log)).</summary>
    public static void NegExp(Tensor x, Tensor y, CommandStream? stream = null)
    {
        ShapeOps.Expect(y, "y", "NegExp", [.. x.Shape]);
        var device = x.Device;
        var local = Shaders.Local1D(device);
        Shaders.EnsureBindable("NegExp", x, y);
        Shaders.RunIn(device, stream, st => st.Dispatch(device.GetKernel(Shaders.NegExp, new LocalSize(local)),
            (Shaders.Groups1D(device, x.Length, local), 1, 1), new NegExpPush((uint)x.Length), x.Buffer, y.Buffer));
    }
}
