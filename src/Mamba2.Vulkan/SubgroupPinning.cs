namespace Mamba2.Vulkan;

/// <summary>
/// What subgroup size a pipeline requires. The host sizes every kernel's workgroup from
/// <see cref="DeviceCapabilities.SubgroupSize"/> (subgroups of a tile, a sum's lanes), which SPIR-V up to 1.5
/// guarantees is what a shader sees. A SPIR-V 1.6 module (the tensor-core variants) lets the driver pick another size
/// for each pipeline, as drivers whose hardware runs several widths do (wave32 or wave64; SIMD8, 16 or 32), and need
/// not fill every subgroup: such a pipeline requires the size the host sized it with, and full subgroups where its
/// workgroup is a whole number of them. A device that fixes one size is unaffected either way.
/// </summary>
public readonly record struct SubgroupPinning(uint RequiredSize, bool FullSubgroups)
{
    public static SubgroupPinning None => default;

    /// <summary>The pinning for a kernel of <paramref name="layout"/> run with workgroups of <paramref name="size"/>.</summary>
    public static SubgroupPinning For(DeviceCapabilities caps, SpirvLayout layout, (uint X, uint Y, uint Z) size)
    {
        if (!layout.AllowsVaryingSubgroupSize || !caps.SubgroupSizeControl)
        {
            return None;
        }

        var s = caps.SubgroupSize;
        var invocations = (ulong)size.X * size.Y * size.Z;
        var required = caps.RequiredSubgroupSizeCompute && s >= caps.MinSubgroupSize && s <= caps.MaxSubgroupSize
            && invocations <= (ulong)s * caps.MaxComputeWorkgroupSubgroups ? s : 0u;
        // Without a required size, full subgroups need the workgroup's x to be a multiple of the largest size.
        var full = caps.ComputeFullSubgroups && size.X % (required != 0 ? required : Math.Max(1u, caps.MaxSubgroupSize)) == 0;
        return new SubgroupPinning(required, full);
    }
}
