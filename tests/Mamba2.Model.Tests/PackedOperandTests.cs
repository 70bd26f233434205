using Mamba2.Model.Ops;
using Mamba2.Model.Tensors;
using Mamba2.Model.Tests.Reference;
using Mamba2.Tests;
using Mamba2.Vulkan;
using Xunit;

namespace Mamba2.Model.Tests;

/// <summary>
/// Packed operands (<see cref="Gemm.Pack"/>): a tensor rounded once to 16-bit operands and read by several products
/// must give exactly the products that convert the fp32 tensor themselves, in every transpose, with split K, in
/// either operand or both; packing again into the same copy must give the new tensor's products; mismatched
/// packings are refused with the argument named.
/// </summary>
public class PackedOperandTests(GpuFixture gpu)
{
    public static TheoryData<Precision> Modes => new(Precision.Fp32Fast, Precision.Bf16);

    [Theory]
    [MemberData(nameof(Modes))]
    public void PackedOperandsGiveTheProductsOfTheTensorsBitForBit(Precision precision)
    {
        var device = gpu.Device;
        if (!PrecisionAvailability.Runs(device, precision))
        {
            using var x = Tensor.FromArray(device, "x", [1f, 2f], 1, 2);
            Assert.Throws<MissingFeatureException>(() => Gemm.Pack(x, precision));
            return;
        }

        // (m, n, k, ta, tb): edges, an odd element count (the last word half empty), split K (few tiles, long K).
        foreach (var (m, n, k, ta, tb) in new[] { (37, 70, 66, false, true), (65, 17, 131, true, false), (40, 24, 4133, true, true), (7, 9, 5, false, false) })
        {
            using var g = new GemmCase(device, 1, m, n, k, ta, tb, 0f);
            var what = $"{precision.Name()} {m}x{n}x{k} ta={ta} tb={tb} seed {g.Seed}";
            float[] Product(GemmInput a, GemmInput b)
            {
                Poison.Fill(g.C);
                Gemm.Run(a, b, g.C, ta, tb, precision: precision, staging: OperandStaging.Converted);
                return g.C.ToArray();
            }

            var expected = Product(g.A, g.B);
            using var a16 = Gemm.Pack(g.A, precision);
            using var b16 = Gemm.Pack(g.B, precision);
            Assert.Equal(expected, Product(a16, g.B));
            Assert.Equal(expected, Product(g.A, b16));
            Assert.Equal(expected, Product(a16, b16));
            Assert.Equal(expected, Product(a16, b16));   // read again: packing leaves nothing to consume
            var exact = GemmReference.Run(g.AV, g.BV, g.CV, 1, m, n, k, ta, tb, 1f, 0f);
            TestMath.AssertClose(Product(a16, b16), exact, precision.Tolerance(), what);
        }
    }

    [Theory]
    [MemberData(nameof(Modes))]
    public void ProductsComeOutAsOperandsOfTheirPrecision(Precision precision)
    {
        var device = gpu.Device;
        if (!PrecisionAvailability.Runs(device, precision))
        {
            using var x = Tensor.FromArray(device, "x", [1f, 2f], 1, 2);
            Assert.Throws<MissingFeatureException>(() => Gemm.RunPacked(x, x, precision, transposeB: true));
            return;
        }

        // (batch, m, n, k, ta, tb): edges, an odd element count, batches, split K (few tiles, long K).
        foreach (var (batch, m, n, k, ta, tb) in new[] { (1, 37, 71, 66, false, true), (3, 19, 45, 33, true, false), (1, 40, 24, 4133, true, true) })
        {
            using var g = new GemmCase(device, batch, m, n, k, ta, tb, 0f);
            var what = $"{precision.Name()} {batch}x{m}x{n}x{k} ta={ta} tb={tb} seed {g.Seed}";
            using var c = Gemm.RunPacked(g.A, g.B, precision, ta, tb, alpha: 0.5f);
            Assert.Equal(batch > 1 ? [batch, m, n] : new[] { m, n }, c.Shape);
            Assert.Equal(precision.Operands(device), c.Operands);
            var exact = GemmReference.Run(g.AV, g.BV, g.CV, batch, m, n, k, ta, tb, 0.5f, 0f);
            TestMath.AssertClose(c.ToArray(), exact, precision.Tolerance(), what);

            // Read as an operand: the same product as its values packed from fp32.
            using var y = Tensor.Empty(device, "y", batch > 1 ? [batch, n, 5] : [n, 5]);
            using var w = Tensor.FromArray(device, "w", TestMath.RandomArray(new Random(g.Seed), batch * n * 5), batch > 1 ? [batch, n, 5] : [n, 5]);
            using var out1 = Tensor.Empty(device, "out1", batch > 1 ? [batch, m, 5] : [m, 5]);
            using var out2 = Tensor.Empty(device, "out2", batch > 1 ? [batch, m, 5] : [m, 5]);
            Gemm.Run(c, w, out1, precision: precision);
            using var values = Tensor.FromArray(device, "c values", c.ToArray(), [.. c.Shape]);
            Gemm.Run(values, w, out2, precision: precision, staging: OperandStaging.Converted);
            Assert.Equal(out2.ToArray(), out1.ToArray());
        }
    }

    [Fact]
    public void PackedProductsRefuseMismatchedOperandsByName()
    {
        var device = gpu.Device;
        using var v = Tensor.FromArray(device, "v", [1f, 2f, 3f], 3);
        using var x = Tensor.FromArray(device, "x", new float[6], 2, 3);
        Assert.Equal("a", Assert.Throws<ArgumentException>(() => Gemm.RunPacked(v, x, Precision.Bf16)).ParamName);
        Assert.Equal("b", Assert.Throws<ArgumentException>(() => Gemm.RunPacked(x, x, Precision.Bf16)).ParamName);   // 2x3 times 2x3
        Assert.Equal("precision", Assert.Throws<ArgumentException>(() => Gemm.RunPacked(x, x, Precision.Fp32, transposeB: true)).ParamName);
    }

    [Fact]
    public void PackedValuesReadBackExactly()
    {
        // Small integers and their halves: exact in bf16 and in f16 at any power-of-two scale.
        var device = gpu.Device;
        float[] values = [.. Enumerable.Range(-40, 81).Select(i => i * 0.5f)];
        using var x = Tensor.FromArray(device, "x", values, 9, 9);
        foreach (var precision in new[] { Precision.Fp32Fast, Precision.Bf16 }.Where(p => PrecisionAvailability.Runs(device, p)))
        {
            using var packed = Gemm.Pack(x, precision);
            Assert.Equal(values, packed.ToArray());
        }
    }

    [Theory]
    [InlineData(GemmOperands.F16)]
    [InlineData(GemmOperands.Bf16)]
    [InlineData(GemmOperands.Bf16ViaF16)]
    public void EveryCountPacksExactly(GemmOperands operands)
    {
        // The conversion pass moves four elements at a time and the last one to three alone: every remainder, and
        // an odd count's last word half empty (zero). The passes themselves need no tensor cores.
        var device = gpu.Device;
        foreach (var n in new[] { 1, 2, 3, 4, 5, 6, 7, 8, 9, 4099, 4101 })
        {
            float[] values = [.. Enumerable.Range(0, n).Select(i => (i % 81 - 40) * 0.5f)];
            using var x = Tensor.FromArray(device, "x", values, n);
            using var packed = TensorCoreGemm.Pack(x, operands, null);
            Assert.Equal(values, packed.ToArray());
            var words = packed.Words.Download();
            Assert.Equal((n + 1) / 2, words.Length);
            if (n % 2 == 1)
            {
                Assert.Equal(0u, words[^1] >> 16);
            }

            // Again into the same copy with garbage in its scale word: the f16 forms' max starts from zero, and
            // bf16's conversion writes its scale of 1 (bits 0) itself.
            packed.ScaleBits.Upload([0x7F7FFFFFu]);
            TensorCoreGemm.PackInto(x, packed, null);
            Assert.Equal(values, packed.ToArray());
            if (!operands.Scaled())
            {
                Assert.Equal(0u, packed.ScaleBits.Download()[0]);
            }
        }
    }

    [Fact]
    public void TheLargestElementOfALargeTensorSetsTheScale()
    {
        // Past four strides of absmax's walk (1,024 workgroups of up to 256, four loads each) and in its tail: the
        // largest |x| sets fp32-fast's scale wherever it sits, else its f16 operand overflows to infinity.
        var device = gpu.Device;
        using var tiny = Tensor.FromArray(device, "x", [1f, 2f], 1, 2);
        if (!PrecisionAvailability.Runs(device, Precision.Fp32Fast))
        {
            Assert.Throws<MissingFeatureException>(() => Gemm.Pack(tiny, Precision.Fp32Fast));
            return;
        }

        const int n = 2_500_003, stride = 1024 * 256;   // n odd: the last word half empty
        var rng = new Random(TestMath.NewSeed());
        var values = new float[n];
        for (var i = 0; i < n; i++)
        {
            values[i] = (i % 81 - 40) * 0.5f;   // exact in f16 at any power-of-two scale that holds 4,096
        }

        // Each of a walk's four loads (at the largest workgroups), then the tail.
        foreach (var at in new[] { rng.Next(stride), stride + rng.Next(stride), 2 * stride + rng.Next(stride), 3 * stride + rng.Next(stride), rng.Next(4 * stride, n) })
        {
            var before = values[at];
            values[at] = -4096f;
            using var x = Tensor.FromArray(device, "x", values, n);
            using var packed = Gemm.Pack(x, Precision.Fp32Fast);
            var back = packed.ToArray();
            Assert.True(back[at] == -4096f, $"element {at}: {back[at]}");
            Assert.Equal(values, back);
            values[at] = before;
        }
    }

    [Theory]
    [MemberData(nameof(Modes))]
    public void OnePackedTensorServesBothOfItsProducts(Precision precision)
    {
        // As a layer's gradient dZ feeds dW = dZ^T u and du = dZ W: the same copy read as A and as A transposed.
        var device = gpu.Device;
        if (!PrecisionAvailability.Runs(device, precision))
        {
            return;
        }

        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        int rows = 150, outs = 70, ins = 33;
        var dzv = TestMath.RandomArray(rng, rows * outs);
        var uv = TestMath.RandomArray(rng, rows * ins);
        var wv = TestMath.RandomArray(rng, outs * ins);
        using var dz = Tensor.FromArray(device, "dz", dzv, rows, outs);
        using var u = Tensor.FromArray(device, "u", uv, rows, ins);
        using var w = Tensor.FromArray(device, "w", wv, outs, ins);
        using var dw = Tensor.Empty(device, "dw", outs, ins);
        using var du = Tensor.Empty(device, "du", rows, ins);
        using var stream = device.BeginStream();
        var dz16 = stream.Own(Gemm.Pack(dz, precision, stream));
        Poison.Fill(dw);
        Poison.Fill(du);
        Gemm.Run(dz16, u, dw, transposeA: true, stream: stream, precision: precision);
        Gemm.Run(dz16, w, du, stream: stream, precision: precision);
        stream.Submit();
        var what = $"{precision.Name()} seed {seed}";
        TestMath.AssertClose(dw.ToArray(), GemmReference.Run(dzv, uv, new float[outs * ins], 1, outs, ins, rows, true, false, 1f, 0f), precision.Tolerance(), what + " dW");
        TestMath.AssertClose(du.ToArray(), GemmReference.Run(dzv, wv, new float[rows * ins], 1, rows, ins, outs, false, false, 1f, 0f), precision.Tolerance(), what + " du");
    }

    [Theory]
    [MemberData(nameof(Modes))]
    public void PackingIntoACopyAgainGivesTheNewTensorsProducts(Precision precision)
    {
        var device = gpu.Device;
        if (!PrecisionAvailability.Runs(device, precision))
        {
            return;
        }

        using var first = new GemmCase(device, 1, 30, 20, 50, false, false, 0f);
        using var second = new GemmCase(device, 1, 30, 20, 50, false, false, 0f);
        using var packed = Gemm.Pack(first.A, precision);
        using var stream = device.BeginStream();
        Gemm.Run(packed, first.B, first.C, stream: stream, precision: precision);
        Gemm.PackInto(second.A, packed, stream);   // after the product that read the first values
        Gemm.Run(packed, second.B, second.C, stream: stream, precision: precision);
        stream.Submit();
        foreach (var g in new[] { first, second })
        {
            TestMath.AssertClose(g.C.ToArray(), GemmReference.Run(g.AV, g.BV, g.CV, 1, 30, 20, 50, false, false, 1f, 0f), precision.Tolerance(), $"seed {g.Seed}");
        }
    }

    [Fact]
    public void MismatchedPackingsAreRefusedNamingTheArgument()
    {
        var device = gpu.Device;
        using var g = new GemmCase(device, 1, 8, 8, 8, false, false, 0f);
        Assert.Contains("fp32 tensor itself", Assert.Throws<ArgumentException>(() => Gemm.Pack(g.A, Precision.Fp32)).Message);
        foreach (var precision in new[] { Precision.Fp32Fast, Precision.Bf16 })
        {
            if (PrecisionPolicy.WhyNot(device, precision) is not null)
            {
                continue;
            }

            using var packed = Gemm.Pack(g.A, precision);
            var other = precision == Precision.Bf16 ? Precision.Fp32Fast : Precision.Bf16;
            if (PrecisionPolicy.WhyNot(device, other) is null)
            {
                var e = Assert.Throws<ArgumentException>(() => Gemm.Run(g.B, packed, g.C, precision: other));
                Assert.Equal("b", e.ParamName);
                Assert.Contains("packed as", e.Message);
            }

            var fp32 = Assert.Throws<ArgumentException>(() => Gemm.Run(packed, g.B, g.C));
            Assert.Equal("a", fp32.ParamName);
            Assert.Contains("fp32 product takes the fp32 tensor", fp32.Message);
            using var wrong = Tensor.Empty(device, "wrong", 8, 9);
            Assert.Throws<ArgumentException>(() => Gemm.PackInto(wrong, packed));
            Assert.Throws<ArgumentException>(() => Gemm.Run(packed, wrong, g.C, precision: precision));   // shapes still checked
        }
    }
}
