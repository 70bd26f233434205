using Mamba2.Model.Ops;

namespace Mamba2.Model.Tests;

/// <summary>Runs a check with the device's row-reduction workgroup, then with the GPU-sized one (256) a CPU driver would not choose.</summary>
internal static class RowWorkgroups
{
    public static void Each(Action check)
    {
        foreach (var local in new uint?[] { null, 256 })
        {
            Shaders.RowLocalForTests.Value = local;
            try
            {
                check();
            }
            finally
            {
                Shaders.RowLocalForTests.Value = null;
            }
        }
    }
}
