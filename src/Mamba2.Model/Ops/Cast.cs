using System.Runtime.InteropServices;
using Mamba2.Model.Tensors;
using Mamba2.Vulkan;

namespace Mamba2.Model.Ops;

/// <summary>Tensors from one <see cref="TensorDType"/> to another on the device.</summary>
public static class Cast
{
    [StructLayout(LayoutKind.Sequential)]
    private readonly record struct ConvertPush(uint N);

    /// <summary>
    /// A new tensor of <paramref name="dtype"/> with <paramref name="x"/>'s shape and values: fp32 rounded to the nearest
    /// bf16 (ties to even, as PyTorch's <c>.to(torch.bfloat16)</c>), bf16 widened to fp32 exactly, or a copy when the
    /// types agree. A bf16 tensor needs 16-bit storage on the device (<see cref="Tensor.Empty(GpuDevice, string, TensorDType, int[])"/>).
    /// </summary>
    public static Tensor To(Tensor x, TensorDType dtype, CommandStream? stream = null, string? name = null)
    {
        var y = Tensor.Empty(x.Device, name ?? x.Name, dtype, [.. x.Shape]);
        try
        {
            Into(x, y, stream);
        }
        catch
        {
            y.Dispose();
            throw;
        }

        return y;
    }

    /// <summary>Writes <paramref name="x"/>'s values into <paramref name="y"/> (same shape), converted to y's type.</summary>
    public static void Into(Tensor x, Tensor y, CommandStream? stream = null)
    {
        const string op = "Cast";
        ShapeOps.Expect(y, "y", op, [.. x.Shape]);
        ShapeOps.ExpectSameDevice(op, x, y);
        var device = x.Device;
        if (x.DType == y.DType)
        {
            Shaders.RunIn(device, stream, st => st.Copy(x.Storage, 0, y.Storage, 0, x.SizeBytes));
            return;
        }

        Shaders.EnsureBindable(op, x, y);
        var (f32, bf16) = x.DType == TensorDType.F32 ? (x, y) : (y, x);
        var local = Shaders.Local1D(device);
        Shaders.RunIn(device, stream, st => st.Dispatch(device.GetKernel(Shaders.Convert, new ConvertSpec(local, ToBf16: x.DType == TensorDType.F32)),
            (Shaders.Groups1D(device, x.Length, local), 1, 1), new ConvertPush((uint)x.Length),
            new BufferBinding(f32.Storage, 0, f32.SizeBytes), new BufferBinding(bf16.Storage, 0, bf16.SizeBytes)));
    }
}
