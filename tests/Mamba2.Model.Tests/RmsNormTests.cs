using Mamba2.Model.Ops;
using Mamba2.Model.Tensors;
using Mamba2.Model.Tests.Reference;
using Mamba2.Tests;
using Mamba2.Vulkan;
using Xunit;

namespace Mamba2.Model.Tests;

public class RmsNormTests(GpuFixture gpu)
{
    private GpuDevice Device => gpu.Device;

    private static double[] Widen(float[] a) => Array.ConvertAll(a, v => (double)v);

    /// <summary>
    /// Shape, group size (0: whole row), gate (none / before / after the norm). Rows and groups of a multiple of four
    /// elements move in runs of four (QUADS), the others one element at a time.
    /// </summary>
    public static TheoryData<int[], int, string> Cases => new()
    {
        { [37, 48], 0, "none" },           // the blocks' RMSNorm
        { [2, 33, 96], 24, "first" },      // the Mamba2 layer: gate first, 4 groups
        { [5, 300], 0, "after" },          // mamba_ssm's default: gate after the norm
        { [3, 7, 20], 5, "after" },
        { [200, 1000], 1000, "first" },    // a row longer than the workgroup
        { [9, 30], 0, "none" },            // one element at a time: a row of 30
        { [4, 6, 42], 14, "first" },       // and groups of 14
    };

    [Theory]
    [MemberData(nameof(Cases))]
    public void ForwardAndGradientsMatchTheReference(int[] shape, int groupSize, string gate)
    {
        RowWorkgroups.Each(() => EachBackwardForm(() => CheckForwardAndGradients(shape, groupSize, gate)));
    }

    /// <summary>The backward's forms: fused (the default, blocks of 5 rows that end mid-batch, and of one row) and split.</summary>
    private void EachBackwardForm(Action check)
    {
        foreach (var form in new[] { NormBackwardForm.Default, NormBackwardForm.Default with { BlockRows = 5 }, NormBackwardForm.Default with { BlockRows = 1 },
                     NormBackwardForm.Split })
        {
            using var forced = OpTuning.Override(Device, t => t with { NormBackward = form });
            check();
        }
    }

    [Theory]
    [InlineData("fused", true, 16)]
    [InlineData(" Split ", false, 64)]
    [InlineData("fused,3", true, 3)]
    [InlineData("split, 128", false, 128)]
    public void BackwardFormsParse(string text, bool fused, int rows)
    {
        Assert.Equal(new NormBackwardForm(fused, rows), NormBackwardForm.Parse(text.Trim()));
    }

    [Theory]
    [InlineData("both")]
    [InlineData("fused,0")]
    [InlineData("split,x")]
    [InlineData("fused,4,4")]
    public void BadBackwardFormsNameTheVariable(string text)
    {
        var e = Assert.Throws<ArgumentException>(() => NormBackwardForm.Parse(text));
        Assert.StartsWith($"{NormBackwardForm.EnvironmentVariable}={text}:", e.Message);
    }

    /// <summary>Fresh inputs for a case: x, the weight, z unless the gate is "none", and a row gradient dy.</summary>
    private sealed record NormCase(string What, int Dim, int GroupSize, int N, float[] Xv, float[] Wv, float[]? Zv, float[] Dyv, bool After)
    {
        public static NormCase Make(int[] shape, int groupSize, string gate)
        {
            var seed = TestMath.NewSeed();
            var rng = new Random(seed);
            var dim = shape[^1];
            var n = (int)ShapeOps.Elements(shape, "x");
            return new($"{ShapeOps.Format(shape)} group {groupSize} gate {gate} seed {seed}", dim, groupSize == 0 ? dim : groupSize, n,
                TestMath.Uniform(rng, n, -2, 2), TestMath.Uniform(rng, dim, 0.5, 1.5), gate == "none" ? null : TestMath.Uniform(rng, n, -3, 3),
                TestMath.Uniform(rng, n, -1, 1), gate == "after");
        }
    }

    private void CheckForwardAndGradients(int[] shape, int groupSize, string gate)
    {
        var (what, dim, gs, n, xv, wv, zv, dyv, after) = NormCase.Make(shape, groupSize, gate);
        const float eps = 1e-5f;
        using var x = Tensor.FromArray(Device, "x", xv, shape);
        using var w = Tensor.FromArray(Device, "weight", wv, dim);
        using var z = zv is null ? null : Tensor.FromArray(Device, "z", zv, shape);
        using var dy = Tensor.FromArray(Device, "dy", dyv, shape);
        using var s = Device.BeginStream();
        using var result = RmsNorm.Forward(x, w, z, eps, groupSize == 0 ? null : groupSize, normBeforeGate: after, s);
        using var grads = RmsNorm.Backward(dy, result, x, w, z, groupSize == 0 ? null : groupSize, normBeforeGate: after, s);
        Poison.Fill(result.Y, grads.Dx, grads.DWeight, grads.Dz);

        s.Submit();
        var (xd, wd, zd) = (Widen(xv), Widen(wv), zv is null ? null : Widen(zv));
        TestMath.AssertClose(result.Y.ToArray(), RmsNormReference.Forward(xd, wd, zd, eps, dim, gs, after), 1e-6, $"{what}: y");
        var (dx, dw, dz) = RmsNormReference.Backward(Widen(dyv), xd, wd, zd, eps, dim, gs, after);
        TestMath.AssertClose(grads.Dx.ToArray(), dx, 1e-5, $"{what}: dx");
        TestMath.AssertClose(grads.DWeight.ToArray(), dw, 1e-5, $"{what}: dweight");
        Assert.Equal(zv is not null, grads.Dz is not null);
        if (dz is not null)
        {
            TestMath.AssertClose(grads.Dz!.ToArray(), dz, 1e-5, $"{what}: dz");
        }
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void ReferenceGradientsMatchFiniteDifferences(bool after)
    {
        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        int rows = 3, dim = 8, gs = 4;
        var x = Widen(TestMath.Uniform(rng, rows * dim, -2, 2));
        var w = Widen(TestMath.Uniform(rng, dim, 0.5, 1.5));
        var z = Widen(TestMath.Uniform(rng, rows * dim, -3, 3));
        var dy = Widen(TestMath.Uniform(rng, rows * dim, -1, 1));
        double Loss() => RmsNormReference.Forward(x, w, z, 1e-5, dim, gs, after).Select((v, i) => v * dy[i]).Sum();
        var (dx, dw, dz) = RmsNormReference.Backward(dy, x, w, z, 1e-5, dim, gs, after);
        FiniteDifferences.Check([("x", x, dx), ("weight", w, dw), ("z", z, dz!)], Loss, $"rmsnorm gate after {after} seed {seed}");
    }

    [Fact]
    public void RowsLargerThanOneBindingAreSplitInWholeBlocks()
    {
        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        int rows = 300, dim = 12;
        var xv = TestMath.Uniform(rng, rows * dim, -2, 2);
        var wv = TestMath.Uniform(rng, dim, 0.5, 1.5);
        var zv = TestMath.Uniform(rng, rows * dim, -3, 3);
        var dyv = TestMath.Uniform(rng, rows * dim, -1, 1);
        using var x = Tensor.FromArray(Device, "x", xv, rows, dim);
        using var w = Tensor.FromArray(Device, "weight", wv, dim);
        using var z = Tensor.FromArray(Device, "z", zv, rows, dim);
        using var dy = Tensor.FromArray(Device, "dy", dyv, rows, dim);
        OpTuning.Set(Device, OpTuning.Of(Device) with { MaxBindingBytes = (ulong)(2 * 64 * dim * 4) });   // 128 rows per slice: 128, 128, 44
        try
        {
            EachBackwardForm(() => CheckSliced(seed, rows, dim, xv, wv, zv, dyv, x, w, z, dy));
        }
        finally
        {
            OpTuning.Set(Device, OpTuning.Of(Device) with { MaxBindingBytes = null });
        }
    }

    private static void CheckSliced(int seed, int rows, int dim, float[] xv, float[] wv, float[] zv, float[] dyv, Tensor x, Tensor w, Tensor z, Tensor dy)
    {
        using var result = RmsNorm.Forward(x, w, z, 1e-5f, 4, normBeforeGate: false);
        using var grads = RmsNorm.Backward(dy, result, x, w, z, 4, normBeforeGate: false);
        var (xd, wd, zd) = (Widen(xv), Widen(wv), Widen(zv));
        TestMath.AssertClose(result.Y.ToArray(), RmsNormReference.Forward(xd, wd, zd, 1e-5, dim, 4, false), 1e-6, $"sliced y seed {seed}");
        var (dx, dw, dz) = RmsNormReference.Backward(Widen(dyv), xd, wd, zd, 1e-5, dim, 4, false);
        TestMath.AssertClose(grads.Dx.ToArray(), dx, 1e-5, $"sliced dx seed {seed}");
        TestMath.AssertClose(grads.DWeight.ToArray(), dw, 1e-5, $"sliced dweight seed {seed}");
        TestMath.AssertClose(grads.Dz!.ToArray(), dz!, 1e-5, $"sliced dz seed {seed}");
    }

    /// <summary>
    /// The layer's way: z read in place from columns of a wider tensor and dz written into columns of another, whose
    /// other columns stay as they were; also with bindings of a few blocks (the wide rows set the slice size), and
    /// with columns and strides of multiples of four (runs of four elements) or not (one at a time).
    /// </summary>
    [Theory]
    [InlineData(false, false, false)]
    [InlineData(true, false, false)]
    [InlineData(false, true, false)]
    [InlineData(false, false, true)]
    [InlineData(true, false, true)]
    [InlineData(false, true, true)]
    public void GateAndItsGradientInColumnViewsMatchTheReference(bool after, bool sliced, bool quads)
    {
        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        int rows = 300, dim = 24, gs = 8;
        var (zStart, dzStart) = quads ? (4, 8) : (5, 11);
        var (zWide, dzWide) = quads ? (zStart + dim + 8, dzStart + dim + 4) : (zStart + dim + 9, dzStart + dim + 2);
        var what = $"gate after {after} sliced {sliced} quads {quads} seed {seed}";
        var xv = TestMath.Uniform(rng, rows * dim, -2, 2);
        var wv = TestMath.Uniform(rng, dim, 0.5, 1.5);
        var wideZ = TestMath.Uniform(rng, rows * zWide, -3, 3);
        var dyv = TestMath.Uniform(rng, rows * dim, -1, 1);
        var zv = new float[rows * dim];
        for (var r = 0; r < rows; r++)
        {
            Array.Copy(wideZ, r * zWide + zStart, zv, r * dim, dim);
        }

        const float untouched = -3.25f;
        using var x = Tensor.FromArray(Device, "x", xv, rows, dim);
        using var w = Tensor.FromArray(Device, "weight", wv, dim);
        using var z = Tensor.FromArray(Device, "zxbcdt", wideZ, rows, zWide);
        using var dy = Tensor.FromArray(Device, "dy", dyv, rows, dim);
        if (sliced)
        {
            OpTuning.Set(Device, OpTuning.Of(Device) with { MaxBindingBytes = (ulong)(2 * 64 * dzWide * 4) });
        }

        try
        {
            EachBackwardForm(() => CheckColumnViews());
        }
        finally
        {
            OpTuning.Set(Device, OpTuning.Of(Device) with { MaxBindingBytes = null });
        }

        void CheckColumnViews()
        {
            using var dWide = Tensor.FromArray(Device, "dzxbcdt", Enumerable.Repeat(untouched, rows * dzWide).ToArray(), rows, dzWide);
            using var s = Device.BeginStream();
            var zView = new ColumnView(z, zStart, dim);
            using var result = RmsNorm.Forward(x, w, zView, 1e-5f, gs, normBeforeGate: after, s);
            using var grads = RmsNorm.Backward(dy, result, x, w, zView, gs, normBeforeGate: after, new ColumnView(dWide, dzStart, dim), s);
            Assert.Null(grads.Dz);
            Poison.Fill(result.Y, grads.Dx, grads.DWeight);
            s.Submit();
            var (xd, wd, zd) = (Widen(xv), Widen(wv), Widen(zv));
            TestMath.AssertClose(result.Y.ToArray(), RmsNormReference.Forward(xd, wd, zd, 1e-5, dim, gs, after), 1e-6, $"{what}: y");
            var (dx, dw, dz) = RmsNormReference.Backward(Widen(dyv), xd, wd, zd, 1e-5, dim, gs, after);
            TestMath.AssertClose(grads.Dx.ToArray(), dx, 1e-5, $"{what}: dx");
            TestMath.AssertClose(grads.DWeight.ToArray(), dw, 1e-5, $"{what}: dweight");
            var wide = dWide.ToArray();
            var dzGot = new float[rows * dim];
            for (var r = 0; r < rows; r++)
            {
                Array.Copy(wide, r * dzWide + dzStart, dzGot, r * dim, dim);
                for (var j = 0; j < dzWide; j++)
                {
                    if (j < dzStart || j >= dzStart + dim)
                    {
                        Assert.True(wide[r * dzWide + j] == untouched, $"{what}: dz wrote column {j} of row {r}, outside its view");
                    }
                }
            }

            TestMath.AssertClose(dzGot, dz!, 1e-5, $"{what}: dz in its columns");
        }
    }

    /// <summary>Shapes and groups with even rows and groups (what the packed output takes).</summary>
    public static TheoryData<int[], int, string> PackedCases => new()
    {
        { [37, 48], 0, "none" },
        { [2, 33, 96], 24, "first" },
        { [5, 300], 0, "after" },
        { [3, 7, 20], 10, "after" },
        { [200, 1000], 1000, "first" },   // a row longer than the workgroup: several pairs an invocation
        { [9, 2], 2, "first" },
    };

    [Theory]
    [MemberData(nameof(PackedCases))]
    public void PackedOutputIsTheOutputRoundedToBf16(int[] shape, int groupSize, string gate) =>
        RowWorkgroups.Each(() => CheckPacked(shape, groupSize, gate));

    private void CheckPacked(int[] shape, int groupSize, string gate)
    {
        var (what, dim, gs, n, xv, wv, zv, _, after) = NormCase.Make(shape, groupSize, gate);
        what = "packed " + what;
        using var x = Tensor.FromArray(Device, "x", xv, shape);
        using var w = Tensor.FromArray(Device, "weight", wv, dim);
        using var z = zv is null ? null : Tensor.FromArray(Device, "z", zv, shape);
        using var packed = TensorCoreGemm.EmptyPacked(Device, "y", shape, GemmOperands.Bf16);
        using var s = Device.BeginStream();
        s.Fill(packed.Words, 0xFFFFFFFFu);   // bf16 NaN in both halves: an unwritten element shows
        s.Fill(packed.ScaleBits, 0x12345678u);
        using var rstd = RmsNorm.ForwardPacked(x, w, z is null ? (ColumnView?)null : z, packed, 1e-5f, groupSize == 0 ? null : groupSize, normBeforeGate: after, s);
        using var fp32 = RmsNorm.Forward(x, w, z, 1e-5f, groupSize == 0 ? null : groupSize, normBeforeGate: after, s);
        s.Submit();

        var words = packed.Words.Download();
        var y = Enumerable.Range(0, n).Select(i => BitConverter.UInt32BitsToSingle((words[i / 2] >> (16 * (i % 2))) << 16)).ToArray();
        var expected = RmsNormReference.Forward(Widen(xv), Widen(wv), zv is null ? null : Widen(zv), 1e-5, dim, gs, after);
        // bf16 inputs' tolerance against float64; and each element the fp32 output rounded to nearest even, or its
        // neighbour where the pairs' sum order left the fp32 value on the other side of a tie.
        TestMath.AssertClose(y, expected, 1e-2, $"{what}: y");
        var rounded = fp32.Y.ToArray().Select(v => TensorCoreGemmTests.Round(v, GemmOperands.Bf16)).ToArray();
        for (var i = 0; i < n; i++)
        {
            Assert.True(Math.Abs(y[i] - rounded[i]) <= Math.Abs(rounded[i]) * Math.Pow(2, -7), $"{what}: element {i} {y[i]} against {rounded[i]}");
        }

        TestMath.AssertClose(rstd.ToArray(), Widen(fp32.Rstd.ToArray()), 1e-6, $"{what}: rstd");
        Assert.Equal(0u, packed.ScaleBits.Download()[0]);   // bf16: scale 1
    }

    [Theory]
    [InlineData(false)]
    [InlineData(true)]
    public void AResidualTermIsAddedAndTheSumWrittenAsTheNormReadsIt(bool packed)
    {
        // A block's norm in the residual stream: it normalizes x + term and writes that sum (the stream's next value).
        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        const int b = 2, l = 45, dim = 48;
        var what = $"residual, {(packed ? "packed" : "fp32")}, seed {seed}";
        var (xv, tv, wv) = (TestMath.Uniform(rng, b * l * dim, -2, 2), TestMath.Uniform(rng, b * l * dim, -2, 2), TestMath.Uniform(rng, dim, 0.5f, 1.5f));
        using var x = Tensor.FromArray(Device, "x", xv, b, l, dim);
        using var term = Tensor.FromArray(Device, "term", tv, b, l, dim);
        using var w = Tensor.FromArray(Device, "weight", wv, dim);
        using var sum = Tensor.Empty(Device, "sum", b, l, dim);
        Poison.Fill(sum);
        var sumv = xv.Select((v, i) => v + tv[i]).ToArray();
        var expected = RmsNormReference.Forward(Widen(sumv), Widen(wv), null, 1e-5, dim, dim, true);
        if (packed)
        {
            using var into = TensorCoreGemm.EmptyPacked(Device, "y", [b, l, dim], GemmOperands.Bf16);
            using var rstd = RmsNorm.ForwardPacked(x, w, into, new ResidualSum(term, sum), 1e-5f, null);
            var words = into.Words.Download();
            var y = Enumerable.Range(0, b * l * dim).Select(i => BitConverter.UInt32BitsToSingle((words[i / 2] >> (16 * (i % 2))) << 16)).ToArray();
            TestMath.AssertClose(y, expected, 1e-2, $"{what}: y");
        }
        else
        {
            using var result = RmsNorm.Forward(x, w, new ResidualSum(term, sum), 1e-5f, null);
            TestMath.AssertClose(result.Y.ToArray(), expected, 1e-5, $"{what}: y");
        }

        Assert.Equal(sumv, sum.ToArray());   // one fp32 add, as the host's
        Assert.Equal("sum", Assert.Throws<ArgumentException>(() => RmsNorm.Forward(x, w, new ResidualSum(term, x), 1e-5f, null)).ParamName);
    }

    /// <summary>
    /// The plain norm's f16 operands (fp32-fast's, and bf16 values as f16) carry the scale of a bound known before any
    /// row is read, sqrt(group size) max|w|: its bits are the scale word, every output lies within it, and the
    /// operands hold the values <see cref="Gemm.Pack"/>'s absmax scale gives them (a row of one large element brings
    /// the largest output near the bound).
    /// </summary>
    [Theory]
    [InlineData(48, 0, false, GemmOperands.F16)]
    [InlineData(48, 0, true, GemmOperands.F16)]   // a block's norm in the residual stream
    [InlineData(30, 10, false, GemmOperands.F16)]   // groups, no quads
    [InlineData(64, 0, true, GemmOperands.Bf16ViaF16)]
    public void ThePlainNormScalesF16OperandsByItsBound(int dim, int groupSize, bool residual, GemmOperands operands)
    {
        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        const int rows = 111;
        var gs = groupSize == 0 ? dim : groupSize;
        var what = $"dim {dim} group {gs} residual {residual} {operands} seed {seed}";
        // |x| >= 1e-3: every output a normal f16 under either scale (2^-28 of the bound is far below).
        var xv = TestMath.Uniform(rng, (long)rows * dim, 1e-3, 2).Select(v => rng.Next(2) == 0 ? v : -v).ToArray();
        for (var j = 0; j < dim; j++)
        {
            xv[(7 * dim) + j] = j == 3 ? 1f : 1e-4f;   // |h r| near sqrt(group size) at column 3
        }

        var wv = TestMath.Uniform(rng, dim, 0.5, 1.5);
        using var x = Tensor.FromArray(Device, "x", xv, rows, dim);
        using var w = Tensor.FromArray(Device, "weight", wv, dim);
        using var term = Tensor.FromArray(Device, "residual", new float[rows * dim], rows, dim);   // zeros: the same rows
        using var sum = Tensor.Empty(Device, "sum", rows, dim);
        using var packed = TensorCoreGemm.EmptyPacked(Device, "y", [rows, dim], operands);
        packed.ScaleBits.Upload([0xdeadbeefu]);
        int? group = groupSize == 0 ? null : groupSize;
        using var s = Device.BeginStream();
        using var plain = RmsNorm.Forward(x, w, null, 1e-5f, group, true, s);
        using var rstd = residual
            ? RmsNorm.ForwardPacked(x, w, packed, new ResidualSum(term, sum), 1e-5f, s)
            : RmsNorm.ForwardPacked(x, w, null, packed, 1e-5f, group, true, s);
        s.Submit();

        var y = plain.Y.ToArray();
        var bound = BitConverter.UInt32BitsToSingle(packed.ScaleBits.Download()[0]);
        var expected = wv.Max(MathF.Abs) * MathF.Sqrt(gs);
        Assert.True(Math.Abs(bound - expected) <= expected * 1e-6, $"{what}: scale word {bound}, sqrt({gs}) max|w| = {expected}");
        var largest = y.Max(MathF.Abs);
        Assert.True(largest <= bound && largest >= 0.95f * MathF.Sqrt(gs) * MathF.Abs(wv[3]), $"{what}: largest |y| {largest}, bound {bound}");
        using var reference = TensorCoreGemm.Pack(plain.Y, operands, null);
        var (want, got) = (reference.ToArray(), packed.ToArray());
        if (dim % 4 == 0 && gs % 4 == 0)
        {
            // Runs of four either way: the same sums, so the same y, and the same operands.
            Assert.Equal(plain.Rstd.ToArray(), rstd.ToArray());
            Assert.Equal(want, got);
            return;
        }

        // Pairs against single elements: another order of the sum of squares, so y may move by an fp32 ulp and an
        // operand by one rounding step.
        TestMath.AssertClose(rstd.ToArray(), Widen(plain.Rstd.ToArray()), 1e-6, $"{what}: rstd");
        for (var i = 0; i < want.Length; i++)
        {
            Assert.True(Math.Abs(got[i] - want[i]) <= Math.Abs(want[i]) * Math.Pow(2, -10), $"{what}: element {i} {got[i]} against {want[i]}");
        }
    }

    [Fact]
    public void PackedOutputIsRefusedWhereAWordWouldSplitAPair()
    {
        using var x = Tensor.Empty(Device, "x", 4, 12);
        using var w = Tensor.Empty(Device, "weight", 12);
        using var odd = Tensor.Empty(Device, "x", 4, 9);
        using var w9 = Tensor.Empty(Device, "weight", 9);
        using var packedOdd = TensorCoreGemm.EmptyPacked(Device, "y", [4, 9], GemmOperands.Bf16);
        var e = Assert.Throws<ArgumentException>(() => RmsNorm.ForwardPacked(odd, w9, null, packedOdd));
        Assert.Contains("must be even", e.Message);
        using var packed = TensorCoreGemm.EmptyPacked(Device, "y", [4, 12], GemmOperands.Bf16);
        e = Assert.Throws<ArgumentException>(() => RmsNorm.ForwardPacked(x, w, null, packed, groupSize: 3));
        Assert.Contains("group_size (3)", e.Message);
        Assert.Throws<ArgumentOutOfRangeException>(() => RmsNorm.ForwardPacked(x, w, null, packed, eps: float.NaN));
        using var f16Odd = TensorCoreGemm.EmptyPacked(Device, "y", [4, 9], GemmOperands.F16);   // f16 too: one rule
        Assert.Contains("must be even", Assert.Throws<ArgumentException>(() => RmsNorm.ForwardPacked(odd, w9, null, f16Odd)).Message);
        using var wrong = TensorCoreGemm.EmptyPacked(Device, "y", [4, 10], GemmOperands.Bf16);
        e = Assert.Throws<ArgumentException>(() => RmsNorm.ForwardPacked(x, w, null, wrong));
        Assert.Equal("into", e.ParamName);
    }

    [Theory]
    [InlineData("none")]
    [InlineData("gated")]
    public void AResidualIsAddedIntoDxAgainstTheReference(string gate)
    {
        // A block's norm in the residual stream: dx comes back as the norm's input gradient plus the stream's.
        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        const int b = 3, l = 29, dim = 40;
        var gated = gate != "none";
        var (xv, wv, dyv, resv) = (TestMath.Uniform(rng, b * l * dim, -2, 2), TestMath.Uniform(rng, dim, 0.5f, 1.5f),
            TestMath.Uniform(rng, b * l * dim, -1, 1), TestMath.Uniform(rng, b * l * dim, -1, 1));
        var zv = TestMath.Uniform(rng, b * l * dim, -2, 2);
        using var x = Tensor.FromArray(Device, "x", xv, b, l, dim);
        using var w = Tensor.FromArray(Device, "w", wv, dim);
        using var z = Tensor.FromArray(Device, "z", zv, b, l, dim);
        using var dy = Tensor.FromArray(Device, "dy", dyv, b, l, dim);
        using var res = Tensor.FromArray(Device, "res", resv, b, l, dim);
        using var saved = gated ? RmsNorm.Forward(x, w, z, 1e-5f, normBeforeGate: false) : RmsNorm.Forward(x, w, eps: 1e-5f);
        using var grads = RmsNorm.Backward(dy, saved.Rstd, x, w, gated ? z : (ColumnView?)null, null, false, null, null, residual: res);
        var (dx, dw, _) = RmsNormReference.Backward(Widen(dyv), Widen(xv), Widen(wv), gated ? Widen(zv) : null, 1e-5, dim, dim, false);
        TestMath.AssertClose(grads.Dx.ToArray(), [.. dx.Select((v, i) => v + resv[i])], 1e-5, $"dx + residual, gate {gate}, seed {seed}");
        TestMath.AssertClose(grads.DWeight.ToArray(), dw, 1e-5, $"dweight beside a residual, gate {gate}, seed {seed}");
        using var wrong = Tensor.Empty(Device, "res", b, l, dim + 1);
        Assert.Equal("residual", Assert.Throws<ArgumentException>(() => RmsNorm.Backward(dy, saved.Rstd, x, w, null, null, false, null, null, residual: wrong)).ParamName);
    }

    [Fact]
    public void BadArgumentsAreNamed()
    {
        using var x = Tensor.Empty(Device, "x", 4, 12);
        using var w = Tensor.Empty(Device, "weight", 11);
        var e = Assert.Throws<ArgumentException>(() => RmsNorm.Forward(x, w));
        Assert.Equal("weight", e.ParamName);
        Assert.Contains("(12)", e.Message);
        using var w2 = Tensor.Empty(Device, "weight", 12);
        e = Assert.Throws<ArgumentException>(() => RmsNorm.Forward(x, w2, groupSize: 5));
        Assert.Contains("group_size must divide", e.Message);
        using var z = Tensor.Empty(Device, "z", 4, 13);
        e = Assert.Throws<ArgumentException>(() => RmsNorm.Forward(x, w2, z));
        Assert.Equal("z", e.ParamName);
        Assert.Throws<ArgumentOutOfRangeException>(() => RmsNorm.Forward(x, w2, eps: float.NaN));

        using var wide = Tensor.Empty(Device, "zxbcdt", 4, 30);
        e = Assert.Throws<ArgumentException>(() => RmsNorm.Forward(x, w2, new ColumnView(wide, 3, 11)));
        Assert.Equal("z", e.ParamName);
        Assert.Contains("4 rows of 12 columns", e.Message);
        using var y = RmsNorm.Forward(x, w2, new ColumnView(wide, 3, 12));
        e = Assert.Throws<ArgumentException>(() => RmsNorm.Backward(x, y, x, w2, new ColumnView(wide, 3, 12), dzInto: new ColumnView(wide, 0, 13)));
        Assert.Equal("dz", e.ParamName);
    }
}
