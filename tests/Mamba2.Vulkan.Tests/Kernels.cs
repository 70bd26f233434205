using System.Runtime.InteropServices;
using Mamba2.Vulkan;

namespace Mamba2.Vulkan.Tests;

/// <summary>The runtime's own test kernel (shaders/test/scale_add.comp): y = alpha * x + beta.</summary>
internal static class Kernels
{
    public static readonly KernelSource ScaleAdd = new(typeof(Kernels).Assembly, "shaders/test/scale_add.spv");

    [StructLayout(LayoutKind.Sequential)]
    public readonly record struct ScaleAddPush(uint N, float Alpha, float Beta);

    public static Kernel Get(GpuDevice device, uint local = 64) => device.GetKernel(ScaleAdd, [local]);

    public static void ScaleAddDispatch(CommandStream s, Kernel k, GpuBuffer<float> x, GpuBuffer<float> y, float alpha, float beta, uint groups = 4) =>
        s.Dispatch(k, (groups, 1, 1), new ScaleAddPush((uint)x.Length, alpha, beta), x, y);
}
