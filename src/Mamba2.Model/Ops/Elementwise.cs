using System.Runtime.InteropServices;
using Mamba2.Model.Tensors;
using Mamba2.Vulkan;

namespace Mamba2.Model.Ops;

/// <summary>Elementwise binary ops (nn/elementwise.comp). <c>y</c> may be <c>a</c> or <c>b</c> (in place).</summary>
public static class Elementwise
{
    private enum Op : uint
    {
        Add = 0,
        Sub = 1,
        Mul = 2,
        Axpby = 3,
    }

    [StructLayout(LayoutKind.Sequential)]
    private readonly record struct Push(uint N, float Alpha, float Beta);

    /// <summary>y = a + b.</summary>
    public static void Add(Tensor a, Tensor b, Tensor y, CommandStream? stream = null) => Run(Op.Add, a, b, y, 1, 1, stream);

    /// <summary>y = a - b.</summary>
    public static void Sub(Tensor a, Tensor b, Tensor y, CommandStream? stream = null) => Run(Op.Sub, a, b, y, 1, 1, stream);

    /// <summary>y = a * b.</summary>
    public static void Mul(Tensor a, Tensor b, Tensor y, CommandStream? stream = null) => Run(Op.Mul, a, b, y, 1, 1, stream);

    /// <summary>y = alpha * a + beta * b.</summary>
    public static void Axpby(float alpha, Tensor a, float beta, Tensor b, Tensor y, CommandStream? stream = null) =>
        Run(Op.Axpby, a, b, y, alpha, beta, stream);

    private static void Run(Op op, Tensor a, Tensor b, Tensor y, float alpha, float beta, CommandStream? stream)
    {
        var name = $"Elementwise.{op}";
        ShapeOps.ExpectSameDevice(name, a, b, y);
        ShapeOps.Expect(b, nameof(b), name, [.. a.Shape]);
        ShapeOps.Expect(y, nameof(y), name, [.. a.Shape]);
        if (a.Length > uint.MaxValue)
        {
            throw new ArgumentException($"{name}: {a.Length} elements exceed the kernel's 32-bit index.", nameof(a));
        }

        var device = a.Device;
        var local = Shaders.Local1D(device);
        var kernel = device.GetKernel(Shaders.Elementwise, new ElementwiseSpec(local, (uint)op));
        Shaders.RunIn(device, stream, s =>
        {
            // Tensors larger than maxStorageBufferRange are bound in pieces.
            foreach (var (first, count) in Shaders.BatchPieces(device, name, a.Length, [1]))
            {
                var groups = Shaders.Groups1D(device, count, local);
                s.Dispatch(kernel, (groups, 1, 1), new Push((uint)count, alpha, beta),
                    Shaders.Slice(a, first, count), Shaders.Slice(b, first, count), Shaders.Slice(y, first, count));
            }
        });
    }
}
