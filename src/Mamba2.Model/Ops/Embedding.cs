using System.Runtime.InteropServices;
using Mamba2.Model.Tensors;
using Mamba2.Vulkan;

namespace Mamba2.Model.Ops;

/// <summary>Token embedding: rows of a table (V, d) picked by int ids (...), and the gradient of the table.</summary>
public static class Embedding
{
    [StructLayout(LayoutKind.Sequential)]
    private readonly record struct Push(uint Rows, uint Dim);

    /// <summary>y (..., d) = table[ids]. Ids outside [0, V) throw before anything is recorded.</summary>
    public static Tensor Forward(IndexTensor ids, Tensor table, CommandStream? stream = null)
    {
        var (vocab, dim) = Validate("Embedding", ids, table);
        var device = table.Device;
        var y = Tensor.Empty(device, "embedded", [.. ids.Shape, dim]);
        return TensorScope.Recorded(y, () =>
        {
            Shaders.EnsureBindable("Embedding", table, y);
            var local = Shaders.Local1D(device);
            Shaders.RunIn(device, stream, st => st.Dispatch(device.GetKernel(Shaders.Embedding, new EmbeddingSpec(local, EmbeddingMode.Lookup)),
                (Shaders.Groups1D(device, y.Length, local), 1, 1), new Push((uint)ids.Length, (uint)dim),
                ids.Buffer, ids.Buffer, table.Buffer, y.Buffer));
        });
    }

    /// <summary>
    /// dtable (V, d): each row the sum of dy over the positions holding that id, in position order (deterministic,
    /// no atomics); rows no id picked are 0.
    /// </summary>
    public static Tensor Backward(Tensor dy, IndexTensor ids, int vocab, CommandStream? stream = null)
    {
        const string op = "Embedding backward";
        if (dy.Rank < 1 || !dy.Shape.Take(dy.Rank - 1).SequenceEqual(ids.Shape))
        {
            throw new ArgumentException($"{op}: dy must have the ids' shape {ShapeOps.Format(ids.Shape)} followed by d, got {ShapeOps.Format(dy.Shape)}.", nameof(dy));
        }

        var dim = dy.Shape[^1];
        CheckRange(op, ids, vocab);
        var device = dy.Device;
        // Positions grouped by id, increasing within each id: a counting sort on the host copy of the ids.
        var values = ids.Values;
        var offsets = new uint[vocab + 1];
        foreach (var v in values)
        {
            offsets[v + 1]++;
        }

        for (var v = 0; v < vocab; v++)
        {
            offsets[v + 1] += offsets[v];
        }

        var positions = new int[values.Length];
        var next = (uint[])offsets.Clone();
        for (var n = 0; n < values.Length; n++)
        {
            positions[next[values[n]]++] = n;
        }

        var dtable = Tensor.Empty(device, "dtable", vocab, dim);
        return TensorScope.Recorded(dtable, () => Shaders.RunIn(device, stream, st =>
        {
            // Created inside the recording and owned at once, so a failure anywhere leaves nothing behind.
            var order = st.Own(device.CreateBuffer<int>(Math.Max(positions.Length, 1), "embedding_positions"));
            var starts = st.Own(device.CreateBuffer<uint>(offsets.Length, "embedding_offsets"));
            order.Upload(positions);
            starts.Upload(offsets);
            var local = Shaders.Local1D(device);
            st.Dispatch(device.GetKernel(Shaders.Embedding, new EmbeddingSpec(local, EmbeddingMode.TableGradient)), (Shaders.Groups1D(device, dtable.Length, local), 1, 1),
                new Push((uint)vocab, (uint)dim), order, starts, dy.Buffer, dtable.Buffer);
        }));
    }

    private static (int Vocab, int Dim) Validate(string op, IndexTensor ids, Tensor table)
    {
        ShapeOps.ExpectRank(table, "table", op, 2);
        if (!ReferenceEquals(ids.Device, table.Device))
        {
            throw new ArgumentException($"{op}: ids live on another device than the table.", nameof(ids));
        }

        CheckRange(op, ids, table.Shape[0]);
        return (table.Shape[0], table.Shape[1]);
    }

    private static void CheckRange(string op, IndexTensor ids, int vocab)
    {
        var values = ids.Values;
        for (var i = 0; i < values.Length; i++)
        {
            if ((uint)values[i] >= (uint)vocab)
            {
                throw new ArgumentOutOfRangeException(nameof(ids), values[i], $"{op}: id {values[i]} at position {i} is outside [0, {vocab}).");
            }
        }
    }
}
