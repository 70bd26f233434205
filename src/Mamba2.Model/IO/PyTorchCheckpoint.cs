using System.IO.Compression;
using Mamba2.Model.Tensors;

namespace Mamba2.Model.IO;

/// <summary>
/// The tensors of a file torch.save wrote (the zip format of torch 1.6 and later: <c>pytorch_model.bin</c>), read
/// without running its pickle: <see cref="RestrictedUnpickler"/> builds only plain containers, and the only calls
/// it lets through are torch's tensor rebuilds and <c>collections.OrderedDict</c>. Anything else (a pickle can name
/// <c>os.system</c>) is refused with an error naming it. Tensors that share a storage, start at an offset or are
/// strided views (tied weights, slices) are read as torch would give them, each into its own contiguous copy.
/// </summary>
public sealed class PyTorchCheckpoint : IDisposable
{
    private readonly string _path;
    private readonly ZipArchive _zip;
    private readonly string _prefix;
    private readonly Dictionary<string, TensorRef> _tensors = [];
    private readonly Dictionary<string, byte[]> _storages = [];

    private sealed record StorageRef(string Key, SafetensorsDType? DType, string TypeName);

    private sealed record TensorRef(StorageRef Storage, long Offset, int[] Shape, long[] Stride);

    private PyTorchCheckpoint(string path, ZipArchive zip, string prefix)
    {
        _path = path;
        _zip = zip;
        _prefix = prefix;
    }

    /// <summary>The state dict's tensor names, in the file's order.</summary>
    public IReadOnlyList<string> Names => [.. _tensors.Keys];

    public bool Contains(string name) => _tensors.ContainsKey(name);

    /// <summary>Every tensor of the file at <paramref name="path"/> (a state dict), by name.</summary>
    public static Dictionary<string, HostTensor> ReadAll(string path)
    {
        using var file = Open(path);
        return file.Names.ToDictionary(n => n, file.Read);
    }

    /// <summary>Reads the file's pickle (not yet its tensors' bytes); throws <see cref="InvalidDataException"/> naming the file for anything else.</summary>
    public static PyTorchCheckpoint Open(string path)
    {
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"{path}: no such file.", path);
        }

        // Read in place (a shard of a large model passes 2 GiB): entries are read as tensors are asked for.
        var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read);
        ZipArchive zip;
        try
        {
            zip = new ZipArchive(stream, ZipArchiveMode.Read, leaveOpen: false);
        }
        catch (Exception e)
        {
            stream.Dispose();
            if (e is InvalidDataException)
            {
                throw new InvalidDataException($"{path}: not the zip format torch.save writes (a torch older than 1.6 wrote another; load and save it again with a current torch).", e);
            }

            throw;
        }

        try
        {
            return Open(path, zip);
        }
        catch
        {
            zip.Dispose();
            throw;
        }
    }

    private static PyTorchCheckpoint Open(string path, ZipArchive zip)
    {

        var pickles = zip.Entries.Where(e => e.FullName == "data.pkl" || e.FullName.EndsWith("/data.pkl", StringComparison.Ordinal)).ToList();
        if (pickles.Count != 1)
        {
            throw new InvalidDataException($"{path}: a torch.save archive holds one data.pkl; this holds {pickles.Count}.");
        }

        var prefix = pickles[0].FullName[..^"data.pkl".Length];
        if (zip.GetEntry(prefix + "byteorder") is { } order && Text(order) is var o && o != "little")
        {
            throw new InvalidDataException($"{path}: its tensors are stored {o}-endian; only little-endian files are read.");
        }

        var file = new PyTorchCheckpoint(path, zip, prefix);
        file.ReadPickle(Bytes(pickles[0]));
        return file;
    }

    /// <summary>One tensor, as a contiguous row-major copy in its stored dtype.</summary>
    public HostTensor Read(string name)
    {
        if (!_tensors.TryGetValue(name, out var t))
        {
            throw new KeyNotFoundException($"{_path}: no tensor {name}.");
        }

        var dtype = t.Storage.DType ?? throw new InvalidDataException($"{_path}: {name} is stored as {t.Storage.TypeName}; only float64, float32, float16, bfloat16, int64 and int32 tensors are read.");
        var size = dtype.ElementSize();
        var storage = StorageBytes(t.Storage);
        var where = $"{_path}: {name} {ShapeOps.Format(t.Shape)} (offset {t.Offset}, strides {string.Join(", ", t.Stride)})";
        var count = HostTensor.TryCountElements(t.Shape) is { } n && n <= int.MaxValue / size ? n
            : throw new InvalidDataException($"{where} is too large to read.");
        if (count == 0)
        {
            return HostTensor.FromBytes(name, dtype, [], t.Shape);
        }

        long last;   // the largest element index the view reaches
        try
        {
            last = checked(t.Offset + t.Shape.Select((d, i) => (d - 1) * t.Stride[i]).Sum());
        }
        catch (OverflowException)
        {
            last = long.MaxValue;
        }

        if (t.Offset < 0 || t.Stride.Any(v => v < 0) || last >= storage.Length / size)
        {
            throw new InvalidDataException($"{where} reaches past its storage of {storage.Length / size} elements.");
        }

        var bytes = new byte[count * size];
        if (IsRowMajor(t.Shape, t.Stride))
        {
            Array.Copy(storage, t.Offset * size, bytes, 0, bytes.Length);
            return HostTensor.FromBytes(name, dtype, bytes, t.Shape);
        }

        var index = new int[t.Shape.Length];
        for (long e = 0; e < count; e++)
        {
            long at = t.Offset;
            for (var i = 0; i < index.Length; i++)
            {
                at += index[i] * t.Stride[i];
            }

            Array.Copy(storage, at * size, bytes, e * size, size);
            for (var i = index.Length - 1; i >= 0 && ++index[i] == t.Shape[i]; i--)
            {
                index[i] = 0;
            }
        }

        return HostTensor.FromBytes(name, dtype, bytes, t.Shape);
    }

    private static bool IsRowMajor(int[] shape, long[] stride)
    {
        long expected = 1;
        for (var i = shape.Length - 1; i >= 0; i--)
        {
            if (shape[i] != 1 && stride[i] != expected)
            {
                return false;
            }

            expected *= shape[i];
        }

        return true;
    }

    private void ReadPickle(byte[] pickle)
    {
        var root = new RestrictedUnpickler($"{_path} (data.pkl)", Call, PersistentLoad).Load(pickle);
        if (root is not Dictionary<object, object?> dict)
        {
            throw new InvalidDataException($"{_path}: holds a {root?.GetType().Name ?? "None"}, not a state dict (name -> tensor).");
        }

        foreach (var (key, value) in dict)
        {
            if (key is string name && value is TensorRef t)
            {
                _tensors[name] = t;
            }
        }

        if (_tensors.Count == 0)
        {
            throw new InvalidDataException($"{_path}: holds no tensors by name (a state dict was expected).");
        }
    }

    /// <summary>What each allowed global makes when called; every other call is refused.</summary>
    private object? Call(PickleGlobal g, object?[] args) => (g.Module, g.Name) switch
    {
        ("collections", "OrderedDict") when args.Length == 0 => new Dictionary<object, object?>(),
        ("torch._utils", "_rebuild_tensor_v2") when args.Length >= 4 => new TensorRef(
            args[0] as StorageRef ?? throw Bad($"rebuilds a tensor from {args[0]?.GetType().Name ?? "None"}, not a storage"),
            Integer(args[1]), Dimensions(args[2]), Strides(args[3], args[2])),
        ("torch._utils", "_rebuild_parameter" or "_rebuild_parameter_with_state") when args.Length >= 1 => args[0],
        ("torch._tensor", "_rebuild_from_type_v2") when args.Length >= 3 && args[0] is PickleGlobal f && args[2] is PickleTuple inner => Call(f, inner.Items),
        ("_codecs", "encode") when args.Length == 2 && args[0] is string s => System.Text.Encoding.Latin1.GetBytes(s),
        _ => throw Bad($"calls {g}, which a state dict of tensors never needs; refused unread, since a pickle can run code"),
    };

    /// <summary>torch's storage references: ('storage', storage type, key, location, element count).</summary>
    private object? PersistentLoad(object? pid)
    {
        if (pid is not PickleTuple { Items: ["storage", PickleGlobal type, string key, ..] })
        {
            throw Bad("has a persistent id that is not one of torch's storage references");
        }

        if (!_storageRefs.TryGetValue(key, out var storage))
        {
            storage = new StorageRef(key, StorageDType(type.Name), type.ToString());
            _storageRefs[key] = storage;
        }

        return storage;
    }

    private readonly Dictionary<string, StorageRef> _storageRefs = [];

    /// <summary>torch's storage classes for the element types this project reads and writes (PyTorchCheckpointWriter too).</summary>
    internal static readonly IReadOnlyDictionary<string, SafetensorsDType> StorageClasses = new Dictionary<string, SafetensorsDType>
    {
        ["DoubleStorage"] = SafetensorsDType.F64,
        ["FloatStorage"] = SafetensorsDType.F32,
        ["HalfStorage"] = SafetensorsDType.F16,
        ["BFloat16Storage"] = SafetensorsDType.BF16,
        ["LongStorage"] = SafetensorsDType.I64,
        ["IntStorage"] = SafetensorsDType.I32,
    };

    private static SafetensorsDType? StorageDType(string typeName) => StorageClasses.TryGetValue(typeName, out var d) ? d : null;

    private byte[] StorageBytes(StorageRef s)
    {
        if (!_storages.TryGetValue(s.Key, out var bytes))
        {
            var entry = _zip.GetEntry($"{_prefix}data/{s.Key}") ?? throw new InvalidDataException($"{_path}: storage {s.Key} is named in data.pkl but missing from the archive.");
            bytes = Bytes(entry);
            _storages[s.Key] = bytes;
        }

        return bytes;
    }

    private int[] Dimensions(object? size) => [.. Integers(size).Select(v => v is >= 0 and <= int.MaxValue ? (int)v : throw Bad($"has a dimension of {v}"))];

    private long[] Strides(object? stride, object? size)
    {
        var s = Integers(stride);
        return s.Length == Integers(size).Length ? s : throw Bad($"gives {s.Length} strides for a tensor of {Integers(size).Length} dimensions");
    }

    private long Integer(object? v) => v is long l ? l : throw Bad($"gives {v?.GetType().Name ?? "None"} where an integer belongs");

    private long[] Integers(object? v) => v is PickleTuple t ? [.. t.Items.Select(Integer)] : throw Bad($"gives {v?.GetType().Name ?? "None"} where a tuple of integers belongs");

    private InvalidDataException Bad(string what) => new($"{_path}: data.pkl {what}.");

    private static byte[] Bytes(ZipArchiveEntry entry)
    {
        using var s = entry.Open();
        using var m = new MemoryStream();
        s.CopyTo(m);
        return m.ToArray();
    }

    private static string Text(ZipArchiveEntry entry) => System.Text.Encoding.ASCII.GetString(Bytes(entry)).Trim();

    public void Dispose() => _zip.Dispose();
}
