using Mamba2.Model.Modules;
using Mamba2.Model.Tensors;
using Mamba2.Model.Tests.Reference;
using Mamba2.Tests;
using Mamba2.Vulkan;

namespace Mamba2.Model.Tests;

/// <summary>A Mamba2 layer against the float64 layer on fresh inputs: output, du and every parameter's gradient.</summary>
internal static class LayerCheck
{
    /// <summary>
    /// Runs <paramref name="layer"/> forward and backward on uniform inputs (b, l, d_model) and asserts every result
    /// within <paramref name="tolerance"/> of the float64 layer with the same parameters; returns the output's
    /// relative error.
    /// </summary>
    public static double AgainstFloat64(GpuDevice device, Mamba2Layer layer, int b, int l, Random rng, double tolerance, string what)
    {
        var config = layer.Config;
        var values = layer.Parameters.ToDictionary(q => q.Name, q => q.Value.ToArray().Select(v => (double)v).ToArray());
        var uv = TestMath.Uniform(rng, b * l * config.DModel, -1, 1);
        var dv = TestMath.Uniform(rng, b * l * config.DModel, -1, 1);
        using var u = Tensor.FromArray(device, "u", uv, b, l, config.DModel);
        using var dout = Tensor.FromArray(device, "dout", dv, b, l, config.DModel);
        using var acts = layer.Forward(u);
        var (du, grads) = layer.Backward(dout, acts);
        try
        {
            var reference = new Mamba2LayerReference(config, values, b, l);
            var ud = uv.Select(v => (double)v).ToArray();
            var outRef = reference.Forward(ud);
            var output = acts.Output.ToArray();
            TestMath.AssertClose(output, outRef, tolerance, $"{what}: out");
            var (duRef, gRef) = reference.Backward(ud, dv.Select(v => (double)v).ToArray());
            TestMath.AssertClose(du.ToArray(), duRef, tolerance, $"{what}: du");
            Xunit.Assert.Equal(gRef.Keys.Order(), grads.Keys.Order());
            foreach (var (name, expected) in gRef)
            {
                TestMath.AssertClose(grads[name].ToArray(), expected, reference.TermScales.GetValueOrDefault(name, expected), tolerance, $"{what}: grad {name}");
            }

            return TestMath.RelativeError(output, outRef);
        }
        finally
        {
            du.Dispose();
            foreach (var g in grads.Values)
            {
                g.Dispose();
            }
        }
    }
}
