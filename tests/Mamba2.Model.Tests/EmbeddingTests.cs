using Mamba2.Model.Ops;
using Mamba2.Model.Tensors;
using Mamba2.Tests;
using Mamba2.Vulkan;
using Xunit;

namespace Mamba2.Model.Tests;

public class EmbeddingTests(GpuFixture gpu)
{
    private GpuDevice Device => gpu.Device;

    [Theory]
    [InlineData(new[] { 2, 37 }, 257, 24, MemoryKind.Upload)]
    [InlineData(new[] { 300 }, 11, 65, MemoryKind.Upload)]   // many repeats of few ids
    [InlineData(new[] { 1403 }, 3, 33, MemoryKind.Upload)]   // one id at every position (a frequent token's row, loaded 8 at a time)
    [InlineData(new[] { 1403 }, 3, 36, MemoryKind.Device)]   // the same, four columns an invocation
    [InlineData(new[] { 2, 2101 }, 8200, 5, MemoryKind.Device)]   // ids and their grouping in device memory
    [InlineData(new[] { 2, 2101 }, 8200, 12, MemoryKind.Upload)]
    public void GatherAndScatterMatchTheReference(int[] shape, int vocab, int dim, MemoryKind residence)
    {
        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        var n = shape.Aggregate(1, (a, b) => a * b);
        var idv = Enumerable.Range(0, n).Select(_ => rng.Next(vocab / 2)).ToArray();   // half the vocabulary unused
        var tv = TestMath.Uniform(rng, (long)vocab * dim, -1, 1);
        var dyv = TestMath.Uniform(rng, (long)n * dim, -1, 1);
        using var ids = IndexTensor.FromArrayIn(residence, Device, "ids", idv, shape);
        using var table = Tensor.FromArray(Device, "table", tv, vocab, dim);
        using var dy = Tensor.FromArray(Device, "dy", dyv, [.. shape, dim]);
        using var s = Device.BeginStream();
        using var y = Embedding.Forward(ids, table, s);
        using var dtable = Embedding.Backward(dy, ids, vocab, s);
        Poison.Fill(y, dtable);
        s.Submit();

        var yRef = new double[n * dim];
        var dRef = new double[vocab * dim];
        for (var i = 0; i < n; i++)
        {
            for (var j = 0; j < dim; j++)
            {
                yRef[i * dim + j] = tv[idv[i] * dim + j];
                dRef[idv[i] * dim + j] += dyv[i * dim + j];
            }
        }

        Assert.Equal([.. shape, dim], y.Shape);
        TestMath.AssertClose(y.ToArray(), yRef, 0, $"embedded seed {seed}");
        var dtableV = dtable.ToArray();
        // Exact fp32's tolerance: a row of 1,403 terms summed in order errs up to ~1.3e-6 (about 1 seed in 75 passes
        // 1e-6); the exact bits below are the strict check.
        TestMath.AssertClose(dtableV, dRef, 1e-5, $"dtable seed {seed}");

        // The contract that makes it deterministic: each row summed in fp32 in position order, so these exact bits.
        var inOrder = new float[vocab * dim];
        for (var i = 0; i < n; i++)
        {
            for (var j = 0; j < dim; j++)
            {
                inOrder[idv[i] * dim + j] += dyv[i * dim + j];
            }
        }

        Assert.Equal(inOrder, dtableV);
    }

    [Theory]
    [InlineData(300, 11, 65)]
    [InlineData(4202, 8200, 12)]   // four neighbours an invocation (d a multiple of 4)
    public void TheTableGradientAddsATiedHeadsPartAsAddingItAfterWould(int n, int vocab, int dim)
    {
        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        var idv = Enumerable.Range(0, n).Select(_ => rng.Next(vocab / 2)).ToArray();
        using var ids = IndexTensor.FromArray(Device, "ids", idv, n);
        using var dy = Tensor.FromArray(Device, "dy", TestMath.Uniform(rng, (long)n * dim, -1, 1), n, dim);
        var headv = TestMath.Uniform(rng, (long)vocab * dim, -1, 1);
        using var head = Tensor.FromArray(Device, "head", headv, vocab, dim);
        using var s = Device.BeginStream();
        using var lookup = Embedding.Backward(dy, ids, vocab, s);
        using var after = Tensor.Empty(Device, "after", vocab, dim);
        Elementwise.Add(lookup, head, after, s);
        using var fused = Embedding.Backward(dy, ids, vocab, s, plus: head);
        Poison.Fill(fused);
        s.Submit();
        var fusedV = fused.ToArray();
        Assert.Equal(after.ToArray(), fusedV);   // the same bits
        var lookupV = lookup.ToArray();
        TestMath.AssertClose(fusedV, [.. lookupV.Select((x, i) => (double)x + headv[i])], 1e-6, $"plus seed {seed}");

        using var narrow = Tensor.Empty(Device, "narrow", vocab, dim + 1);
        var e = Assert.Throws<ArgumentException>(() => Embedding.Backward(dy, ids, vocab, plus: narrow));
        Assert.Contains("plus", e.Message);
        using var half = Tensor.Empty(Device, "half", TensorDType.BF16, vocab, dim);
        e = Assert.Throws<ArgumentException>(() => Embedding.Backward(dy, ids, vocab, plus: half));
        Assert.Contains("float32", e.Message);
    }

    [Fact]
    public void TableGradientIsDeterministicAndIdsAreChecked()
    {
        var rng = new Random(TestMath.NewSeed());
        var idv = Enumerable.Range(0, 500).Select(_ => rng.Next(7)).ToArray();
        using var ids = IndexTensor.FromArray(Device, "ids", idv, 500);
        using var dy = Tensor.FromArray(Device, "dy", TestMath.Uniform(rng, 500 * 8, -1, 1), 500, 8);
        using var first = Embedding.Backward(dy, ids, 7);
        using var second = Embedding.Backward(dy, ids, 7);
        Assert.True(first.ToArray().AsSpan().SequenceEqual(second.ToArray()));

        using var table = Tensor.Empty(Device, "table", 6, 8);
        var e = Assert.Throws<ArgumentOutOfRangeException>(() => Embedding.Forward(ids, table));
        Assert.Contains("outside [0, 6)", e.Message);
        using var dyBad = Tensor.Empty(Device, "dy", 499, 8);
        Assert.Throws<ArgumentException>(() => Embedding.Backward(dyBad, ids, 7));
    }

    [Fact]
    public void GroupingPreparedAheadGivesTheSameGradientForEachVocabulary()
    {
        // PrepareBackward uploads the grouping before a recording; the backward then reads it as made, for the
        // vocabulary it was made for, and groups again for another.
        var rng = new Random(TestMath.NewSeed());
        var idv = Enumerable.Range(0, 300).Select(_ => rng.Next(5)).ToArray();
        using var dy = Tensor.FromArray(Device, "dy", TestMath.Uniform(rng, 300 * 4, -1, 1), 300, 4);
        using var plainIds = IndexTensor.FromArray(Device, "ids", idv, 300);
        using var plain = Embedding.Backward(dy, plainIds, 5);
        using var wider = Embedding.Backward(dy, plainIds, 9);

        using var ids = IndexTensor.FromArray(Device, "ids", idv, 300);
        Embedding.PrepareBackward(ids, 5);
        using var s = Device.BeginStream();
        using var prepared = Embedding.Backward(dy, ids, 5, s);
        Poison.Fill(prepared);
        s.Submit();
        Assert.True(plain.ToArray().AsSpan().SequenceEqual(prepared.ToArray()));
        using var preparedWider = Embedding.Backward(dy, ids, 9);
        Assert.True(wider.ToArray().AsSpan().SequenceEqual(preparedWider.ToArray()));
        Assert.All(wider.ToArray()[(5 * 4)..], v => Assert.Equal(0f, v));   // ids 5..8 never occur

        Assert.Throws<ArgumentOutOfRangeException>(() => Embedding.PrepareBackward(ids, 4));
    }
}
