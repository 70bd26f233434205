using Mamba2.Tests;
using Xunit;

namespace Mamba2.Model.Tests.Reference;

/// <summary>Checks float64 reference gradients against central differences of a scalar loss, every element.</summary>
public static class FiniteDifferences
{
    /// <summary>
    /// For every input of <paramref name="inputs"/> (perturbed in place, then restored), the central difference of
    /// <paramref name="loss"/> against the same-named tensor of <paramref name="gradients"/>: relative error &lt;= 1e-5.
    /// </summary>
    public static void Check(SsdTensors64 inputs, SsdTensors64 gradients, Func<double> loss, string what, double step = 1e-6)
    {
        Assert.Equal(inputs.Named().Select(n => n.Name), gradients.Named().Select(n => n.Name));
        Check(inputs.Named().Zip(gradients.Named(), (i, g) => (i.Name, i.Data, g.Data)), loss, what, step);
    }

    /// <summary>The same for any named (input, analytic gradient) pairs: relative error &lt;= 1e-5 each.</summary>
    public static void Check(IEnumerable<(string Name, double[] Input, double[] Gradient)> pairs, Func<double> loss, string what, double step = 1e-6)
    {
        foreach (var (name, input, grad) in pairs)
        {
            var numeric = new double[input.Length];
            for (var i = 0; i < input.Length; i++)
            {
                var keep = input[i];
                input[i] = keep + step;
                var up = loss();
                input[i] = keep - step;
                var down = loss();
                input[i] = keep;
                numeric[i] = (up - down) / (2 * step);
            }

            var err = TestMath.RelativeError(Array.ConvertAll(grad, g => (float)g), numeric);
            TestMath.RecordMargin(err, 1e-5, $"{what}: reference grad_{name} vs finite differences");
            Assert.True(err <= 1e-5, $"{what}: reference grad_{name} vs finite differences: relative error {err:E3}");
        }
    }

    /// <summary>sum(dy * y) + sum(dfinal * final): the scalar whose gradient is the backward's from dy and dfinal.</summary>
    public static double Loss((double[] Y, double[] Final) output, double[] dy, double[] dFinal) =>
        output.Y.Select((t, i) => t * dy[i]).Sum() + output.Final.Select((t, i) => t * dFinal[i]).Sum();
}
