using System.Buffers.Binary;
using System.IO.Compression;
using System.Text;

namespace Mamba2.Model.IO;

/// <summary>
/// Writes a state dict as torch.save does (the zip format: archive/data.pkl, archive/data/KEY, archive/byteorder,
/// archive/version), so torch.load, with or without weights_only, and <see cref="PyTorchCheckpoint"/> read it. The
/// pickle names only what weights_only allows: collections.OrderedDict, torch._utils._rebuild_tensor_v2 and the
/// storage classes. Tensors named in <c>tied</c> share the storage of another, as tied weights do in torch.
/// </summary>
public static class PyTorchCheckpointWriter
{
    /// <summary>
    /// Writes <paramref name="tensors"/> (in order) to <paramref name="path"/>, atomically and durably; each
    /// (name, target) of <paramref name="tied"/> adds a tensor <c>name</c> that is a view of <c>target</c>'s storage.
    /// </summary>
    public static void Write(string path, IReadOnlyList<HostTensor> tensors, IReadOnlyList<(string Name, string Target)>? tied = null)
    {
        ArgumentNullException.ThrowIfNull(tensors);
        var keys = new Dictionary<string, (string Key, HostTensor Tensor)>();
        foreach (var t in tensors)
        {
            if (!keys.TryAdd(t.Name, (keys.Count.ToString(System.Globalization.CultureInfo.InvariantCulture), t)))
            {
                throw new ArgumentException($"{path}: tensor {t.Name} is given twice.", nameof(tensors));
            }
        }

        var entries = tensors.Select(t => (t.Name, Storage: keys[t.Name])).ToList();
        foreach (var (name, target) in tied ?? [])
        {
            if (!keys.TryGetValue(target, out var storage) || keys.ContainsKey(name))
            {
                throw new ArgumentException($"{path}: {name} can only be tied to a tensor written here ({target}), under a new name.", nameof(tied));
            }

            entries.Add((name, storage));
        }

        var pickle = new PickleBuilder();
        pickle.Global("collections", "OrderedDict").EmptyTuple().Reduce().Mark();
        foreach (var (name, (key, t)) in entries)
        {
            pickle.Unicode(name).Global("torch._utils", "_rebuild_tensor_v2").Mark();
            pickle.Mark().Unicode("storage").Global("torch", StorageClass(t.DType)).Unicode(key).Unicode("cpu").Int(checked((int)t.ElementCount)).Tuple().PersistentId();
            pickle.Int(0).Ints(t.Shape).Ints(Strides(t.Shape)).False();
            pickle.Global("collections", "OrderedDict").EmptyTuple().Reduce();   // backward hooks
            pickle.Tuple().Reduce();
        }

        pickle.SetItems().Stop();

        DurableFiles.Write(path, stream =>
        {
            using var zip = new ZipArchive(stream, ZipArchiveMode.Create, leaveOpen: true);
            void Add(string name, ReadOnlySpan<byte> data)
            {
                using var s = zip.CreateEntry("archive/" + name, CompressionLevel.NoCompression).Open();
                s.Write(data);
            }

            Add("data.pkl", pickle.Bytes);
            Add("byteorder", "little"u8);
            foreach (var (key, t) in keys.Values)
            {
                Add("data/" + key, t.Data.Span);
            }

            Add("version", "3\n"u8);
        });
    }

    private static string StorageClass(SafetensorsDType dtype) =>
        PyTorchCheckpoint.StorageClasses.Single(c => c.Value == dtype).Key;

    private static int[] Strides(int[] shape)
    {
        var strides = new int[shape.Length];
        var s = 1;
        for (var i = shape.Length - 1; i >= 0; i--)
        {
            strides[i] = s;
            s = checked(s * shape[i]);
        }

        return strides;
    }

    /// <summary>Pickle protocol 2, the opcodes a state dict needs.</summary>
    private sealed class PickleBuilder
    {
        private readonly List<byte> _b = [0x80, 0x02];

        public byte[] Bytes => [.. _b];

        private PickleBuilder Op(byte op)
        {
            _b.Add(op);
            return this;
        }

        public PickleBuilder Mark() => Op((byte)'(');

        public PickleBuilder Tuple() => Op((byte)'t');

        public PickleBuilder EmptyTuple() => Op((byte)')');

        public PickleBuilder Reduce() => Op((byte)'R');

        public PickleBuilder PersistentId() => Op((byte)'Q');

        public PickleBuilder SetItems() => Op((byte)'u');

        public PickleBuilder Stop() => Op((byte)'.');

        public PickleBuilder False() => Op(0x89);

        public PickleBuilder Global(string module, string name)
        {
            _b.Add((byte)'c');
            _b.AddRange(Encoding.ASCII.GetBytes($"{module}\n{name}\n"));
            return this;
        }

        public PickleBuilder Unicode(string s)
        {
            var bytes = Encoding.UTF8.GetBytes(s);
            Span<byte> n = stackalloc byte[4];
            BinaryPrimitives.WriteInt32LittleEndian(n, bytes.Length);
            _b.Add((byte)'X');
            _b.AddRange(n.ToArray());
            _b.AddRange(bytes);
            return this;
        }

        public PickleBuilder Int(int v)
        {
            Span<byte> n = stackalloc byte[4];
            BinaryPrimitives.WriteInt32LittleEndian(n, v);
            _b.Add((byte)'J');
            _b.AddRange(n.ToArray());
            return this;
        }

        public PickleBuilder Ints(int[] values)
        {
            Mark();
            foreach (var v in values)
            {
                Int(v);
            }

            return Tuple();
        }
    }
}
