using Mamba2.Vulkan;

namespace Mamba2.Model.Tensors;

/// <summary>
/// A dense row-major int32 tensor: token ids and targets. It keeps the host copy it was made from, so ops can check
/// ranges and plan scatters without reading the device back. Its values (and their grouping) live in host-visible
/// memory that kernels read over the bus: written once and read once or twice a step, they cost a copy there instead
/// of a staging submission and its wait each (four a training step).
/// </summary>
public sealed class IndexTensor : IDisposable
{
    private readonly int[] _host;
    private readonly Dictionary<int, IndexGrouping> _groupings = [];   // by vocabulary; a recorded stream may read any

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
    public static IndexTensor FromArray(GpuDevice device, string name, ReadOnlySpan<int> data, params int[] shape)
    {
        var length = ShapeOps.Elements(shape, name);
        if (data.Length != length)
        {
            throw new ArgumentException(
                $"{name}: shape {ShapeOps.Format(shape)} holds {length} elements but {data.Length} values were given.", nameof(data));
        }

        var t = new IndexTensor(device, device.CreateBuffer<int>(length, name, MemoryKind.Upload), (int[])shape.Clone(), name, data.ToArray());
        t.Buffer.Upload(data);
        return t;
    }

    public int[] ToArray() => Buffer.Download();

    /// <summary>
    /// The positions grouped by value, for scatters that sum per id (the embedding's gradient): made on the host and
    /// uploaded on the first call for a vocabulary, then kept with this tensor (freed with it: streams recorded with a
    /// grouping may still read it). Call it before a staged recording starts
    /// so that no upload lands in the middle of one (an upload through staging waits for the work launched before it).
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

        var order = Device.CreateBuffer<int>(Math.Max(positions.Length, 1), Name + ".grouped_positions", MemoryKind.Upload);
        GpuBuffer<uint>? starts = null;
        try
        {
            starts = Device.CreateBuffer<uint>(offsets.Length, Name + ".group_starts", MemoryKind.Upload);
            order.Upload(positions);
            starts.Upload(offsets);
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
