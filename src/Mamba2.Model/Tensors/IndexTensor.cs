using Mamba2.Vulkan;

namespace Mamba2.Model.Tensors;

/// <summary>
/// A dense row-major int32 tensor: token ids and targets. It keeps the host copy it was made from, so ops can check
/// ranges and plan scatters without reading the device back. Its values (and their grouping) live in host memory,
/// written by a memcpy: the embedding's kernels read an id once per four elements they move, so reading ids over the
/// bus costs the step little, while device memory filled by a launched copy (<see cref="FromArrayIn"/>) left the GPU
/// idle at the Trainer's step edge for longer than that saved (docs/PERF.md).
/// </summary>
public sealed class IndexTensor : IDisposable
{
    private readonly int[] _host;
    private readonly Dictionary<int, IndexGrouping> _groupings = [];   // by vocabulary; a recorded stream may read any
    private readonly List<CommandStream> _uploads = [];   // launched copies into device memory, disposed before it

    private IndexTensor(GpuDevice device, GpuBuffer<int> buffer, int[] shape, string name, int[] host)
    {
        Device = device;
        Buffer = buffer;
        Shape = shape;
        Name = name;
        _host = host;
    }

    /// <summary>The values, as uploaded.</summary>
    public ReadOnlySpan<int> Values => _host;

    public GpuDevice Device { get; }

    public IReadOnlyList<int> Shape { get; }

    public string Name { get; }

    public long Length => Buffer.Length;

    internal GpuBuffer<int> Buffer { get; }

    /// <summary>A tensor holding <paramref name="data"/> (row-major, length = product of <paramref name="shape"/>).</summary>
    public static IndexTensor FromArray(GpuDevice device, string name, ReadOnlySpan<int> data, params int[] shape) =>
        FromArrayIn(MemoryKind.Upload, device, name, data, shape);

    /// <summary>
    /// The same in the memory named: <see cref="MemoryKind.Upload"/> (host) or <see cref="MemoryKind.Device"/>, filled
    /// by a copy launched as the tensor is made, which the host does not wait for (streams launched after it see it).
    /// </summary>
    internal static IndexTensor FromArrayIn(MemoryKind residence, GpuDevice device, string name, ReadOnlySpan<int> data, params int[] shape)
    {
        var length = ShapeOps.Elements(shape, name);
        if (data.Length != length)
        {
            throw new ArgumentException(
                $"{name}: shape {ShapeOps.Format(shape)} holds {length} elements but {data.Length} values were given.", nameof(data));
        }

        if (residence is not (MemoryKind.Upload or MemoryKind.Device))
        {
            throw new ArgumentOutOfRangeException(nameof(residence), residence, "Index tensors live in host (Upload) or device memory.");
        }

        var t = new IndexTensor(device, device.CreateBuffer<int>(length, name, residence), (int[])shape.Clone(), name, data.ToArray());
        try
        {
            CommandStream? copies = null;
            t.Fill(t.Buffer, t._host, ref copies);
            copies?.Launch();
        }
        catch
        {
            t.Dispose();
            throw;
        }

        return t;
    }

    /// <summary>
    /// Fills a fresh buffer of this tensor: host memory directly, device memory by a copy recorded into
    /// <paramref name="copies"/> (also where that memory is mapped, as on CPU drivers: one path everywhere).
    /// </summary>
    private void Fill<T>(GpuBuffer buffer, T[] values, ref CommandStream? copies)
        where T : unmanaged
    {
        if (buffer.Kind != MemoryKind.Device)
        {
            buffer.Upload<T>(values);
            return;
        }

        copies ??= Own(Device.BeginStream(Name + " upload"));
        copies.Upload<T>(buffer, values);
    }

    private CommandStream Own(CommandStream stream)
    {
        _uploads.Add(stream);
        return stream;
    }

    public int[] ToArray() => Buffer.Download();

    /// <summary>
    /// The positions grouped by value, for scatters that sum per id (the embedding's gradient): made on the host and
    /// uploaded on the first call for a vocabulary, then kept with this tensor (freed with it: streams recorded with a
    /// grouping may still read it). Its copy is launched at once, so any stream launched later sees it; the
    /// Trainer groups a batch before recording (Embedding.PrepareBackward), keeping the counting sort off the host's
    /// recording of the backward.
    /// </summary>
    internal IndexGrouping GroupedBy(int vocab)
    {
        if (_groupings.TryGetValue(vocab, out var g))
        {
            return g;
        }

        // Positions grouped by id, increasing within each id: a counting sort of the host copy.
        var offsets = new uint[vocab + 1];
        foreach (var v in _host)
        {
            offsets[v + 1]++;
        }

        for (var v = 0; v < vocab; v++)
        {
            offsets[v + 1] += offsets[v];
        }

        var positions = new int[_host.Length];
        var next = (uint[])offsets.Clone();
        for (var n = 0; n < _host.Length; n++)
        {
            positions[next[_host[n]]++] = n;
        }

        // Where the tensor lives (the embedding's backward reads both once per element it writes, as it reads ids).
        var order = Device.CreateBuffer<int>(Math.Max(positions.Length, 1), Name + ".grouped_positions", Buffer.Kind);
        GpuBuffer<uint>? starts = null;
        try
        {
            starts = Device.CreateBuffer<uint>(offsets.Length, Name + ".group_starts", Buffer.Kind);
            CommandStream? copies = null;
            Fill(order, positions, ref copies);
            Fill(starts, offsets, ref copies);
            copies?.Launch();
        }
        catch
        {
            order.Dispose();
            starts?.Dispose();
            throw;
        }

        return _groupings[vocab] = new IndexGrouping(order, starts);
    }

    public override string ToString() => $"{Name}{ShapeOps.Format(Shape)} (int32)";

    public void Dispose()
    {
        // The launched copies first: they write the buffers freed below (disposing one waits for it).
        foreach (var s in _uploads)
        {
            s.Dispose();
        }

        _uploads.Clear();
        foreach (var g in _groupings.Values)
        {
            g.Dispose();
        }

        _groupings.Clear();
        Buffer.Dispose();
    }
}

/// <summary>
/// An index tensor's positions grouped by value (<see cref="IndexTensor.GroupedBy"/>): <see cref="Positions"/> lists
/// the positions of value 0, then of value 1, ..., and value v's run is [Starts[v], Starts[v + 1]).
/// </summary>
internal sealed record IndexGrouping(GpuBuffer<int> Positions, GpuBuffer<uint> Starts) : IDisposable
{
    public void Dispose()
    {
        Positions.Dispose();
        Starts.Dispose();
    }
}
