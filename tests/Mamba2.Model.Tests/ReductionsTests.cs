using Mamba2.Model.Ops;
using Mamba2.Model.Tensors;
using Mamba2.Tests;
using Xunit;

namespace Mamba2.Model.Tests;

/// <summary>The fixed-order sums behind the gradients of broadcast parameters (dD, dA, ddt_bias).</summary>
public class ReductionsTests(GpuFixture gpu)
{
    [Theory]
    [InlineData(1, 1, 1)]
    [InlineData(37, 5, 1)]
    [InlineData(64, 3, 17)]
    [InlineData(129, 4, 64)]
    [InlineData(33, 7, 1)]        // two levels of Sum, the last block one row
    [InlineData(1500, 9, 1)]      // three levels
    public void SumRowsThenInnerMatchesFloat64(int rows, int outs, int inner)
    {
        var seed = TestMath.NewSeed();
        var values = TestMath.RandomArray(new Random(seed), rows * outs * inner, 2f);
        var device = gpu.Device;
        using var a = Tensor.FromArray(device, "a", values, rows, outs, inner);
        using var y = Tensor.Empty(device, "y", outs);
        float[] Run()
        {
            Poison.Fill(y);
            using (var st = device.BeginStream())
            {
                Reductions.SumRowsThenInner(st, a.Buffer, y.Buffer, (uint)rows, (uint)outs, (uint)inner);
                st.Submit();
            }

            return y.ToArray();
        }

        var got = Run();
        var expected = new double[outs];
        var terms = new double[outs];
        for (var r = 0; r < rows; r++)
        {
            for (var o = 0; o < outs; o++)
            {
                for (var k = 0; k < inner; k++)
                {
                    var v = values[((long)r * outs + o) * inner + k];
                    expected[o] += v;
                    terms[o] += Math.Abs(v);
                }
            }
        }

        TestMath.AssertClose(got, expected, terms, 1e-6, $"rows {rows} outs {outs} inner {inner} seed {seed}");
        Assert.Equal(got, Run());   // fixed order: the same bits again
    }
}
