using Mamba2.Model.Tensors;
using Mamba2.Tests;
using Mamba2.Vulkan;

namespace Mamba2.Model.Tests;

/// <summary>
/// Fresh random operands of one GEMM test on the device: a and b as stored (transposed when asked), c random when
/// beta is used and NaN-poisoned otherwise; the host arrays for the float64 reference.
/// </summary>
internal sealed class GemmCase : IDisposable
{
    public GemmCase(GpuDevice device, int batch, int m, int n, int k, bool ta, bool tb, float beta)
    {
        Seed = TestMath.NewSeed();
        var rng = new Random(Seed);
        AV = TestMath.RandomArray(rng, batch * m * k);
        BV = TestMath.RandomArray(rng, batch * k * n);
        CV = beta != 0 ? TestMath.RandomArray(rng, batch * m * n) : Enumerable.Repeat(float.NaN, batch * m * n).ToArray();
        int[] Shape(int r, int c) => batch > 1 ? [batch, r, c] : [r, c];
        A = Tensor.FromArray(device, "a", AV, ta ? Shape(k, m) : Shape(m, k));
        B = Tensor.FromArray(device, "b", BV, tb ? Shape(n, k) : Shape(k, n));
        C = Tensor.FromArray(device, "c", CV, Shape(m, n));
    }

    public int Seed { get; }

    public float[] AV { get; }

    public float[] BV { get; }

    public float[] CV { get; }

    public Tensor A { get; }

    public Tensor B { get; }

    public Tensor C { get; }

    public void Dispose()
    {
        A.Dispose();
        B.Dispose();
        C.Dispose();
    }
}
