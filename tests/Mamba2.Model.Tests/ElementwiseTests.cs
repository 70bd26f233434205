using Mamba2.Model.Ops;
using Mamba2.Model.Tensors;
using Mamba2.Tests;
using Xunit;

namespace Mamba2.Model.Tests;

public class ElementwiseTests(GpuFixture gpu)
{
    public static TheoryData<int[]> Shapes => new() { new[] { 1 }, new[] { 7, 3 }, new[] { 3, 5, 67 }, new[] { 100_003 } };

    [Theory]
    [MemberData(nameof(Shapes))]
    public void MatchesFloat64Reference(int[] shape)
    {
        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        var n = (int)ShapeOps.Elements(shape, "x");
        var av = TestMath.RandomArray(rng, n, 3f);
        var bv = TestMath.RandomArray(rng, n, 3f);
        var device = gpu.Device;
        using var a = Tensor.FromArray(device, "a", av, shape);
        using var b = Tensor.FromArray(device, "b", bv, shape);
        using var y = Tensor.Empty(device, "y", shape);
        // Each reference with the size of its terms: one element whose terms cancel cannot be judged relative to itself
        // (axpby rounds -1.5 b before the sum: 1.2e-6 of a cancelled total in one run).
        var cases = new (string Name, Action Run, Func<int, double> Ref, Func<int, double> Terms)[]
        {
            ("add", () => Elementwise.Add(a, b, y), i => (double)av[i] + bv[i], i => Math.Abs(av[i]) + Math.Abs(bv[i])),
            ("sub", () => Elementwise.Sub(a, b, y), i => (double)av[i] - bv[i], i => Math.Abs(av[i]) + Math.Abs(bv[i])),
            ("mul", () => Elementwise.Mul(a, b, y), i => (double)av[i] * bv[i], i => Math.Abs((double)av[i] * bv[i])),
            ("axpby", () => Elementwise.Axpby(0.25f, a, -1.5f, b, y), i => 0.25 * av[i] - 1.5 * bv[i], i => Math.Abs(0.25 * av[i]) + Math.Abs(1.5 * bv[i])),
        };
        foreach (var (name, run, reference, terms) in cases)
        {
            Poison.Fill(y);
            run();
            TestMath.AssertClose(y.ToArray(), Enumerable.Range(0, n).Select(reference).ToArray(), Enumerable.Range(0, n).Select(terms).ToArray(), 1e-6,
                $"{name} {ShapeOps.Format(shape)} seed {seed}");
        }
    }

    [Fact]
    public void InPlaceAccumulation()
    {
        var device = gpu.Device;
        using var acc = Tensor.FromArray(device, "acc", [1, 2, 3], 3);
        using var g = Tensor.FromArray(device, "g", [10, 20, 30], 3);
        using (var s = device.BeginStream())
        {
            Elementwise.Add(acc, g, acc, s);
            Elementwise.Add(acc, g, acc, s);
            Assert.Equal(1, s.BarrierCount); // the second add reads what the first wrote
            s.Submit();
        }

        Assert.Equal([21f, 42f, 63f], acc.ToArray());
    }

    [Fact]
    public void TensorsLargerThanOneBindingAreProcessedInPieces()
    {
        var device = gpu.Device;
        var n = (int)Math.Min(device.Capabilities.MaxStorageBufferRange / 4 + 1000, 1 << 28);
        var rng = new Random(TestMath.NewSeed());
        var av = TestMath.RandomArray(rng, n);
        using var a = Tensor.FromArray(device, "a", av, n);
        using var y = Tensor.Empty(device, "y", n);
        Poison.Fill(y);
        Elementwise.Axpby(2f, a, 0f, a, y);
        var r = y.ToArray();
        for (var i = 0; i < n; i++)
        {
            if (r[i] != 2f * av[i])
            {
                Assert.Fail($"element {i} of {n}: {r[i]} != {2f * av[i]}");
            }
        }
    }

    [Fact]
    public void ShapeMismatchNamesTheArgumentAndBothShapes()
    {
        var device = gpu.Device;
        using var a = Tensor.Empty(device, "a", 2, 3);
        using var b = Tensor.Empty(device, "b", 3, 2);
        using var y = Tensor.Empty(device, "y", 2, 3);
        var e = Assert.Throws<ArgumentException>(() => Elementwise.Add(a, b, y));
        Assert.Equal("b", e.ParamName);
        Assert.Contains("(2, 3)", e.Message);
        Assert.Contains("(3, 2)", e.Message);
    }
}
