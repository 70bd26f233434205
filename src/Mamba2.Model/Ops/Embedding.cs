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
            Shaders.RunIn(device, stream, st => st.Dispatch(device.GetKernel(Shaders.Embedding, new EmbeddingSpec(local, EmbeddingMode.Lookup, Quads: Quads(dim))),
                (Shaders.Groups1D(device, y.Length / Width(dim), local), 1, 1), new Push((uint)ids.Length, (uint)dim),
                ids.Buffer, ids.Buffer, table.Buffer, y.Buffer, table.Buffer));
        });
    }

    /// <summary>
    /// Groups <paramref name="ids"/>' positions by id and uploads them now, for a later <see cref="Backward"/> of these
    /// ids: that backward then records no upload, which in a staged recording would make the host wait for the stages
    /// launched before it.
    /// </summary>
    public static void PrepareBackward(IndexTensor ids, int vocab)
    {
        CheckRange("Embedding backward", ids, vocab);
        ids.GroupedBy(vocab);
    }

    /// <summary>
    /// dtable (V, d): each row the sum of dy over the positions holding that id, in position order (deterministic,
    /// no atomics); rows no id picked are 0. With <paramref name="plus"/> (V, d), that sum + plus in the same pass: a
    /// tied LM head's part of the table's gradient (the bits of adding it after).
    /// </summary>
    public static Tensor Backward(Tensor dy, IndexTensor ids, int vocab, CommandStream? stream = null, Tensor? plus = null)
    {
        const string op = "Embedding backward";
        if (dy.Rank < 1 || !dy.Shape.Take(dy.Rank - 1).SequenceEqual(ids.Shape))
        {
            throw new ArgumentException($"{op}: dy must have the ids' shape {ShapeOps.Format(ids.Shape)} followed by d, got {ShapeOps.Format(dy.Shape)}.", nameof(dy));
        }

        var dim = dy.Shape[^1];
        if (plus is not null)
        {
            ShapeOps.Expect(plus, nameof(plus), op, vocab, dim);
            ShapeOps.ExpectSameDevice(op, dy, plus);
            if (plus.DType != TensorDType.F32)
            {
                throw new ArgumentException($"{op}: plus must be float32, got {plus.DType.Name()}.", nameof(plus));
            }
        }

        CheckRange(op, ids, vocab);
        var device = dy.Device;
        var grouping = ids.GroupedBy(vocab);   // made and uploaded already where the caller asked ahead (PrepareBackward)
        var dtable = Tensor.Empty(device, "dtable", vocab, dim);
        return TensorScope.Recorded(dtable, () => Shaders.RunIn(device, stream, st =>
        {
            var local = Shaders.Local1D(device);
            st.Dispatch(device.GetKernel(Shaders.Embedding, new EmbeddingSpec(local, EmbeddingMode.TableGradient, plus is not null, Quads(dim))),
                (Shaders.Groups1D(device, dtable.Length / Width(dim), local), 1, 1), new Push((uint)vocab, (uint)dim), grouping.Positions, grouping.Starts,
                dy.Buffer, dtable.Buffer, (plus ?? dy).Buffer);   // without plus, a buffer the pass already reads
        }));
    }

    /// <summary>Rows of a multiple of 4 move four neighbours an invocation (every tensor here is bound whole, 16-byte aligned).</summary>
    private static bool Quads(int dim) => dim % 4 == 0;

    private static int Width(int dim) => Quads(dim) ? 4 : 1;

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
