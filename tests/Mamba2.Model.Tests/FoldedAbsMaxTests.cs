using Mamba2.Model.Ops;
using Mamba2.Model.Tensors;
using Mamba2.Tests;
using Mamba2.Vulkan;
using Xunit;

namespace Mamba2.Model.Tests;

/// <summary>
/// Folded scales (shaders/include/fold_absmax.glsl): the kernels that write a tensor on its way to f16 tensor-core
/// operands fold its largest |v| into the packed copy's scale word as they go, so that packing it reads it once. The
/// word must hold exactly what nn/absmax.comp finds reading the tensor back, counting only what the kernel wrote,
/// wherever the largest value sits (planted in the last row, which the last workgroup writes, and in a random one);
/// the operands packed with it must be those <see cref="Gemm.Pack"/>'s passes make. No tensor cores needed: these
/// are the plain kernels and the packing passes.
/// </summary>
public class FoldedAbsMaxTests(GpuFixture gpu)
{
    private const float Far = 1e30f;   // in the columns a writer does not own: a word that took them would show it

    private GpuDevice Device => gpu.Device;

    private static uint MaxBits(IEnumerable<float> values) => values.Select(v => BitConverter.SingleToUInt32Bits(MathF.Abs(v))).DefaultIfEmpty(0u).Max();

    private static uint Word(PackedOperand p) => p.ScaleBits.Download()[0];

    private static int SpikeRow(string at, int rows, Random rng) => at == "last" ? rows - 1 : rng.Next(rows);

    [Theory]
    [InlineData(new[] { 2, 33 }, 96, 24, "first", false, "last", GemmOperands.F16)]   // the layer's gated norm, per group
    [InlineData(new[] { 3, 37 }, 48, 48, "after", false, "last", GemmOperands.F16)]   // (the plain norm needs no fold: RmsNormTests)
    [InlineData(new[] { 5, 7 }, 30, 10, "after", false, "random", GemmOperands.F16)]   // no quads (30 % 4)
    [InlineData(new[] { 301 }, 64, 0, "first", false, "last", GemmOperands.Bf16ViaF16)]   // bf16 on f16 tensor cores
    public void TheNormFoldsItsOutputsLargestIntoF16Operands(int[] shape, int dim, int groupSize, string gate, bool residual, string at, GemmOperands operands)
    {
        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        var rows = shape.Aggregate(1, (a, b) => a * b);
        var gs = groupSize == 0 ? dim : groupSize;
        var what = $"{string.Join("x", shape)} dim {dim} group {gs} gate {gate} residual {residual} spike {at} seed {seed}";
        // Rows of nearly equal magnitudes normalize to about 1 (at most 1.22 |w| silu(z) off the spike); one row of
        // a single large element normalizes it to about sqrt(group size) (at least 3.16, above all others even where
        // the gates differ by their whole range).
        var xv = TestMath.Uniform(rng, (long)rows * dim, 0.9, 1.1).Select(v => rng.Next(2) == 0 ? v : -v).ToArray();
        var zv = TestMath.Uniform(rng, (long)rows * dim, 2.5, 3.5);
        var row = SpikeRow(at, rows, rng);
        var col = rng.Next(dim);
        for (var j = 0; j < dim; j++)
        {
            xv[(row * dim) + j] = j == col ? 1f : 0.01f;
        }

        using var x = Tensor.FromArray(Device, "x", xv, [.. shape, dim]);
        using var z = gate == "none" ? null : Tensor.FromArray(Device, "z", zv, [.. shape, dim]);
        using var w = Tensor.FromArray(Device, "weight", TestMath.Uniform(rng, dim, 0.9, 1.1), dim);
        using var term = residual ? Tensor.FromArray(Device, "residual", TestMath.Uniform(rng, (long)rows * dim, -1e-3, 1e-3), [.. shape, dim]) : null;
        using var sum = residual ? Tensor.Empty(Device, "sum", [.. shape, dim]) : null;
        using var packed = TensorCoreGemm.EmptyPacked(Device, "y", [.. shape, dim], operands);
        packed.Words.Upload(Enumerable.Repeat(0x7e007e00u, (int)packed.Words.Length).ToArray());   // f16 NaNs
        packed.ScaleBits.Upload([0xdeadbeefu]);
        int? group = groupSize == 0 ? null : groupSize;
        var after = gate == "after";
        using var s = Device.BeginStream();
        using var plain = term is null
            ? RmsNorm.Forward(x, w, z, 1e-5f, group, after, s)
            : RmsNorm.Forward(x, w, new ResidualSum(term, sum!), 1e-5f, s);
        using var rstd = term is null
            ? RmsNorm.ForwardPacked(x, w, z is null ? null : (ColumnView?)z, packed, 1e-5f, group, after, s)
            : RmsNorm.ForwardPacked(x, w, packed, new ResidualSum(term, sum!), 1e-5f, s);
        Poison.Fill(plain.Y, rstd);
        s.Submit();

        var y = plain.Y.ToArray();
        Assert.True(MaxBits(y.Skip(row * dim).Take(dim)) == MaxBits(y), $"{what}: the spike is not the largest output");
        Assert.True(MaxBits(y) == Word(packed), $"{what}: folded {Word(packed):x8}, largest |y| {MaxBits(y):x8}");
        Assert.Equal(plain.Rstd.ToArray(), rstd.ToArray());
        using var reference = TensorCoreGemm.Pack(plain.Y, operands, null);
        Assert.Equal(Word(reference), Word(packed));
        Assert.Equal(reference.Words.Download(), packed.Words.Download());
    }

    [Theory]
    [InlineData(3, 41, 48, 0, false, "last")]
    [InlineData(2, 33, 96, 24, false, "random")]
    [InlineData(5, 7, 30, 10, true, "last")]   // gate after the norm; no quads
    public void TheGatedNormsBackwardFoldsOnlyTheDzItWrites(int b, int l, int dim, int groupSize, bool after, string at)
    {
        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        int rows = b * l, start = 8, stride = start + dim + 12;   // dz among other columns, as in the fused gradient
        var what = $"b{b} L{l} dim {dim} group {groupSize} after {after} spike {at} seed {seed}";
        var dyv = TestMath.Uniform(rng, (long)rows * dim, -1, 1);
        var row = SpikeRow(at, rows, rng);
        for (var j = 0; j < dim; j++)
        {
            dyv[(row * dim) + j] *= 1000f;   // dz is linear in dy: the spike row's dz is the largest
        }

        using var x = Tensor.FromArray(Device, "x", TestMath.Uniform(rng, (long)rows * dim, -1, 1), b, l, dim);
        using var proj = Tensor.FromArray(Device, "zxbcdt", TestMath.Uniform(rng, (long)rows * stride, -3, 3), b, l, stride);
        var z = new ColumnView(proj, start, dim);
        using var w = Tensor.FromArray(Device, "weight", TestMath.Uniform(rng, dim, 0.5, 1.5), dim);
        using var dy = Tensor.FromArray(Device, "dy", dyv, b, l, dim);
        using var into = Tensor.FromArray(Device, "dzxbcdt", Enumerable.Repeat(Far, rows * stride).ToArray(), b, l, stride);
        using var word = TensorCoreGemm.EmptyPacked(Device, "dzxbcdt", [rows, stride], GemmOperands.F16);
        int? group = groupSize == 0 ? null : groupSize;
        using var s = Device.BeginStream();
        s.Fill(word.ScaleBits, 0u);
        using var result = RmsNorm.Forward(x, w, z, 1e-5f, group, normBeforeGate: after, s);
        using var grads = RmsNorm.Backward(dy, result.Rstd, x, w, z, group, after, new ColumnView(into, start, dim), s, dzAbsMaxInto: word.ScaleBits);
        s.Submit();

        var dz = Bf16ActivationOpsTests.Columns(into.ToArray(), rows, stride, start, dim);
        Assert.DoesNotContain(Far, dz);
        Assert.True(MaxBits(dz.Skip(row * dim).Take(dim)) == MaxBits(dz), $"{what}: the spike row's dz is not the largest");
        Assert.True(MaxBits(dz) == Word(word), $"{what}: folded {Word(word):x8}, largest |dz| {MaxBits(dz):x8}");
    }

    [Theory]
    [InlineData(3, 41, 48, true, "last")]   // a block's norm: the residual stream's gradient, the layer below's dout
    [InlineData(5, 7, 30, false, "random")]   // norm_f's: the last layer's dout; no quads
    public void TheBlockNormsBackwardFoldsItsDx(int b, int l, int dim, bool residual, string at)
    {
        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        var rows = b * l;
        var what = $"b{b} L{l} dim {dim} residual {residual} spike {at} seed {seed}";
        var dyv = TestMath.Uniform(rng, (long)rows * dim, -1, 1);
        var row = SpikeRow(at, rows, rng);
        for (var j = 0; j < dim; j++)
        {
            dyv[(row * dim) + j] *= 1000f;   // dx is linear in dy (the residual term is small): the spike row's is the largest
        }

        using var x = Tensor.FromArray(Device, "h", TestMath.Uniform(rng, (long)rows * dim, -1, 1), b, l, dim);
        using var w = Tensor.FromArray(Device, "weight", TestMath.Uniform(rng, dim, 0.5, 1.5), dim);
        using var dy = Tensor.FromArray(Device, "dy", dyv, b, l, dim);
        using var term = residual ? Tensor.FromArray(Device, "dh", TestMath.Uniform(rng, (long)rows * dim, -1, 1), b, l, dim) : null;
        using var word = TensorCoreGemm.EmptyPacked(Device, "dout", [rows, dim], GemmOperands.F16);
        using var s = Device.BeginStream();
        s.Fill(word.ScaleBits, 0u);
        using var result = RmsNorm.Forward(x, w, eps: 1e-5f, stream: s);
        using var grads = RmsNorm.Backward(dy, result.Rstd, x, w, null, null, true, null, s, residual: term, dxAbsMaxInto: word.ScaleBits);
        Poison.Fill(grads.Dx);
        s.Submit();

        var dx = grads.Dx.ToArray();
        Assert.True(MaxBits(dx.Skip(row * dim).Take(dim)) == MaxBits(dx), $"{what}: the spike row's dx is not the largest");
        Assert.True(MaxBits(dx) == Word(word), $"{what}: folded {Word(word):x8}, largest |dx| {MaxBits(dx):x8}");
        // Refused: dz's max where there is no dz; dx's where dx is stored as bf16 (the fold would see it unrounded).
        Assert.Equal("dzAbsMaxInto", Assert.Throws<ArgumentException>(() =>
            RmsNorm.Backward(dy, result.Rstd, x, w, null, null, true, null, null, dzAbsMaxInto: word.ScaleBits)).ParamName);
        if (Device.Capabilities.Storage16Bit)
        {
            using var x16 = Tensor.FromArray(Device, "h", x.ToArray(), TensorDType.BF16, b, l, dim);
            Assert.Equal("dxAbsMaxInto", Assert.Throws<ArgumentException>(() =>
                RmsNorm.Backward(dy, result.Rstd, x16, w, null, null, true, null, null, dxAbsMaxInto: word.ScaleBits)).ParamName);
        }
    }

    [Theory]
    [InlineData(2, 37, 4, Conv1dPadding.Causal, "last")]
    [InlineData(3, 130, 7, Conv1dPadding.Same, "random")]
    public void TheConvsBackwardFoldsOnlyTheDxItWrites(int b, int l, int k, Conv1dPadding padding, string at)
    {
        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        int[] widths = [12, 5, 5];   // dy from three tensors, as the SSD's dx, dB and dC
        int c = widths.Sum(), start = 7, stride = start + c + 3, rows = b * l;
        var what = $"b{b} L{l} K{k} {padding} spike {at} seed {seed}";
        var dyv = TestMath.Uniform(rng, (long)rows * c, -1, 1);
        var row = SpikeRow(at, rows, rng);
        for (var j = 0; j < c; j++)
        {
            dyv[(row * c) + j] *= 1000f;   // dx is linear in dy: dx next to the spike row is the largest
        }

        using var proj = Tensor.FromArray(Device, "zxbcdt", TestMath.Uniform(rng, (long)rows * stride, -2, 2), b, l, stride);
        using var w = Tensor.FromArray(Device, "weight", TestMath.Uniform(rng, (long)c * k, -1, 1), c, k);
        using var bias = Tensor.FromArray(Device, "bias", TestMath.Uniform(rng, c, -1, 1), c);
        var dyParts = widths.Select((wd, i) => Tensor.FromArray(Device, $"dy{i}", Bf16ActivationOpsTests.Columns(dyv, rows, c, widths.Take(i).Sum(), wd), b, l, wd)).ToList();
        using var into = Tensor.FromArray(Device, "dzxbcdt", Enumerable.Repeat(Far, rows * stride).ToArray(), b, l, stride);
        using var word = TensorCoreGemm.EmptyPacked(Device, "dzxbcdt", [rows, stride], GemmOperands.F16);
        try
        {
            using var s = Device.BeginStream();
            s.Fill(word.ScaleBits, 0u);
            using var grads = Conv1d.Backward(dyParts, new ColumnView(proj, start, c), w, bias, padding, silu: true, new ColumnView(into, start, c), null, s,
                word.ScaleBits);
            s.Submit();

            var dx = Bf16ActivationOpsTests.Columns(into.ToArray(), rows, stride, start, c);
            Assert.DoesNotContain(Far, dx);
            var near = dx.Skip(Math.Max(0, row - k) * c).Take((2 * k + 1) * c);   // the rows whose dx reads the spike's du
            Assert.True(MaxBits(near) == MaxBits(dx), $"{what}: dx away from the spike row is the largest");
            Assert.True(MaxBits(dx) == Word(word), $"{what}: folded {Word(word):x8}, largest |dx| {MaxBits(dx):x8}");
        }
        finally
        {
            dyParts.ForEach(t => t.Dispose());
        }
    }

    [Theory]
    [InlineData(301, 24, 32, 4, 36, 8, "last")]   // 16-byte moves
    [InlineData(97, 7, 13, 3, 14, 2, "random")]   // one element at a time
    public void ACopyFoldsOnlyWhatItCopies(int rows, int width, int srcCols, int srcCol, int dstCols, int dstCol, string at)
    {
        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        var what = $"rows {rows} width {width} src {srcCol}/{srcCols} dst {dstCol}/{dstCols} spike {at} seed {seed}";
        var sv = TestMath.Uniform(rng, (long)rows * srcCols, -1, 1);
        var row = SpikeRow(at, rows, rng);
        sv[(row * srcCols) + srcCol + rng.Next(width)] = -77f;
        sv[srcCol - 1] = 1e20f;   // next to the copied columns, not among them
        sv[((rows - 1) * srcCols) + srcCol + width] = -1e20f;

        using var src = Tensor.FromArray(Device, "ddt", sv, rows, srcCols);
        using var dst = Tensor.FromArray(Device, "dzxbcdt", Enumerable.Repeat(Far, rows * dstCols).ToArray(), rows, dstCols);
        using var word = TensorCoreGemm.EmptyPacked(Device, "dzxbcdt", [rows, dstCols], GemmOperands.F16);
        using var s = Device.BeginStream();
        s.Fill(word.ScaleBits, 0u);
        Columns.Copy(src, srcCol, dst, dstCol, width, s, word.ScaleBits);
        s.Submit();

        Assert.Equal(Bf16ActivationOpsTests.Columns(sv, rows, srcCols, srcCol, width), Bf16ActivationOpsTests.Columns(dst.ToArray(), rows, dstCols, dstCol, width));
        Assert.True(BitConverter.SingleToUInt32Bits(77f) == Word(word), $"{what}: folded {Word(word):x8}");
    }

    [Fact]
    public void ThreeWritersFoldIntoOneScaleThatPacksTheirTensor()
    {
        // The layer's backward: the norm, the conv and the copy each write columns of one fp32 gradient and fold
        // into one zeroed word; the conversion pass alone then packs it, as absmax and the conversion would.
        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        int b = 2, l = 45, dim = 32, c = 20, heads = 3, rows = b * l, stride = dim + c + heads;
        using var x = Tensor.FromArray(Device, "x", TestMath.Uniform(rng, (long)rows * dim, -1, 1), b, l, dim);
        using var proj = Tensor.FromArray(Device, "zxbcdt", TestMath.Uniform(rng, (long)rows * stride, -3, 3), b, l, stride);
        using var w = Tensor.FromArray(Device, "norm weight", TestMath.Uniform(rng, dim, 0.5, 1.5), dim);
        using var cw = Tensor.FromArray(Device, "conv weight", TestMath.Uniform(rng, (long)c * 4, -1, 1), c, 4);
        using var grad = Tensor.Empty(Device, "dzxbcdt", rows, stride);
        using var folded = TensorCoreGemm.EmptyPacked(Device, "dzxbcdt", [rows, stride], GemmOperands.F16);
        // Each writer in turn holds the largest values (its inputs 100 times the others'), so none can be dropped unseen.
        for (var largest = 0; largest < 3; largest++)
        {
            float[] Input(long n, int writer) => [.. TestMath.Uniform(rng, n, -1, 1).Select(v => writer == largest ? 100f * v : v)];
            using var dyScaled = Tensor.FromArray(Device, "dy", Input((long)rows * dim, 0), b, l, dim);
            using var dyConvScaled = Tensor.FromArray(Device, "dxBC", Input((long)rows * c, 1), b, l, c);
            using var ddtScaled = Tensor.FromArray(Device, "ddt", Input((long)rows * heads, 2), rows, heads);
            Poison.Fill(grad);
            using var s = Device.BeginStream();
            s.Fill(folded.ScaleBits, 0u);
            var z = new ColumnView(proj, 0, dim);
            using var result = RmsNorm.Forward(x, w, z, 1e-5f, null, true, s);
            using var ng = RmsNorm.Backward(dyScaled, result.Rstd, x, w, z, null, true, new ColumnView(grad.View(b, l, stride), 0, dim), s,
                dzAbsMaxInto: folded.ScaleBits);
            using var cg = Conv1d.Backward([dyConvScaled], new ColumnView(proj, dim, c), cw, null, Conv1dPadding.Causal, silu: true,
                new ColumnView(grad.View(b, l, stride), dim, c), null, s, folded.ScaleBits);
            Columns.Copy(ddtScaled, 0, grad, dim + c, heads, s, folded.ScaleBits);
            TensorCoreGemm.PackFolded(s, grad, folded);
            s.Submit();

            using var reference = TensorCoreGemm.Pack(grad, GemmOperands.F16, null);
            Assert.True(Word(reference) == Word(folded), $"writer {largest} seed {seed}: folded {Word(folded):x8}, largest {Word(reference):x8}");
            Assert.Equal(reference.Words.Download(), folded.Words.Download());
        }
    }
}
