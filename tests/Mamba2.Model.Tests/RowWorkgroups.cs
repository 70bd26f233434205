using Mamba2.Model.Ops;

namespace Mamba2.Model.Tests;

/// <summary>Runs a check with the device's row-reduction workgroup, then with the GPU-sized one (256) a CPU driver would not choose.</summary>
internal static class RowWorkgroups
{
    public static void Each(Action check)
    {
        var device = Mamba2.Tests.GpuFixture.Current!.Device;
        foreach (var local in new uint?[] { null, 256 })
        {
            using var forced = OpTuning.Override(device, t => t with { RowLocal = local });
            check();
        }
    }
}
