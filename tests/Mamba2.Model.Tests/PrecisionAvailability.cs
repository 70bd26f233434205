using Mamba2.Model.Ops;
using Mamba2.Vulkan;
using Xunit;

namespace Mamba2.Model.Tests;

/// <summary>
/// Whether a test can run a precision mode here. Where the build or device cannot, the mode must be refused with a
/// reason, and MAMBA2_TEST_REQUIRE turns that into a failure (as for the tensor-core GEMM tests).
/// </summary>
internal static class PrecisionAvailability
{
    /// <summary>True when <paramref name="precision"/> runs on <paramref name="device"/>; else asserts it was not required.</summary>
    public static bool Runs(GpuDevice device, Precision precision)
    {
        if (PrecisionPolicy.WhyNot(device, precision) is not { } why)
        {
            return true;
        }

        var required = (Environment.GetEnvironmentVariable(TensorCoreGemmTests.RequireVariable) ?? "").Split(',');
        // bf16 runs on f16 cooperative matrices where a device has no bf16 ones (GemmOperands.Bf16ViaF16).
        Assert.False(required.Contains("khr_coopmat"), $"required, but: {why}");
        Assert.Contains(precision.Name(), why);
        return false;
    }
}
