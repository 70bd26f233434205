using Silk.NET.Vulkan;

namespace Mamba2.Vulkan;

/// <summary>
/// Drivers that list cooperative matrices they cannot run in the configuration at hand. lavapipe lowers a
/// subgroup-scope matrix to one row a lane (its rows are the subgroup size, LP_NATIVE_VECTOR_WIDTH / 32) but lists
/// 8x8 shapes at any width: with subgroups of 16 (LP_NATIVE_VECTOR_WIDTH=512) every such kernel reads and writes out of
/// its rows and the process crashes (Mesa 26.1; at 128 bits it lists none).
/// </summary>
public static class CooperativeMatrixFault
{
    /// <summary>Why <paramref name="shapes"/> cannot run on this driver at <paramref name="subgroupSize"/>, or null.</summary>
    public static string? Of(DriverId driver, uint subgroupSize, IReadOnlyList<CooperativeMatrixShape> shapes) =>
        driver == DriverId.MesaLlvmpipe && shapes.Any(s => s.M != subgroupSize || s.N != subgroupSize)
            ? $"lavapipe runs its {string.Join(", ", shapes.Select(s => $"{s.M}x{s.N}").Distinct())} matrices one row a lane, so only in subgroups of that many "
              + $"(LP_NATIVE_VECTOR_WIDTH={32 * shapes[0].M}); this one runs subgroups of {subgroupSize}, where they crash"
            : null;
}
