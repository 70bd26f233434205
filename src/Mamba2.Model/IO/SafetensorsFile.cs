using System.Buffers.Binary;
using Microsoft.Win32.SafeHandles;

namespace Mamba2.Model.IO;

/// <summary>
/// An open safetensors file: the header is parsed and validated at open, tensor data is read on demand,
/// so a multi-gigabyte checkpoint costs only the tensors asked for.
/// </summary>
public sealed class SafetensorsFile : IDisposable
{
    private const int NamesInErrors = 20;

    private readonly FileStream _stream;
    private readonly long _dataStart;
    private readonly Dictionary<string, TensorInfo> _byName;
    private bool _disposed;

    private SafetensorsFile(string path, FileStream stream, long dataStart, SafetensorsHeader header)
    {
        Path = path;
        _stream = stream;
        _dataStart = dataStart;
        _byName = header.Tensors.ToDictionary(t => t.Name);
        Names = header.Tensors.Select(t => t.Name).ToList().AsReadOnly();
        Metadata = header.Metadata.AsReadOnly();
    }

    public string Path { get; }

    /// <summary>Tensor names in header order.</summary>
    public IReadOnlyList<string> Names { get; }

    /// <summary>The "__metadata__" entries (empty when the file has none).</summary>
    public IReadOnlyDictionary<string, string> Metadata { get; }

    /// <summary>Opens <paramref name="path"/> and validates its header; throws <see cref="InvalidDataException"/> naming the problem.</summary>
    public static SafetensorsFile Open(string path)
    {
        ArgumentNullException.ThrowIfNull(path);
        var stream = new FileStream(path, FileMode.Open, FileAccess.Read, FileShare.Read, bufferSize: 1, FileOptions.RandomAccess);
        try
        {
            var length = stream.Length;
            if (length < 8)
            {
                throw SafetensorsHeader.Invalid(path, $"the file is {length} bytes, too short to hold the 8-byte header length");
            }

            Span<byte> prefix = stackalloc byte[8];
            ReadExactly(stream.SafeFileHandle, prefix, 0, path);
            var headerLength = BinaryPrimitives.ReadUInt64LittleEndian(prefix);
            if (headerLength > SafetensorsHeader.MaxHeaderBytes)
            {
                throw SafetensorsHeader.Invalid(
                    path, $"header length {headerLength} exceeds the {SafetensorsHeader.MaxHeaderBytes}-byte limit (not a safetensors file?)");
            }

            if ((long)headerLength > length - 8)
            {
                throw SafetensorsHeader.Invalid(path, $"header length {headerLength} runs past the end of the {length}-byte file");
            }

            var json = new byte[headerLength];
            ReadExactly(stream.SafeFileHandle, json, 8, path);
            var dataStart = 8 + (long)headerLength;
            var header = SafetensorsHeader.Parse(json, length - dataStart, path);
            return new SafetensorsFile(path, stream, dataStart, header);
        }
        catch
        {
            stream.Dispose();
            throw;
        }
    }

    /// <summary>Every tensor of <paramref name="path"/>, keyed by name.</summary>
    public static Dictionary<string, HostTensor> ReadAll(string path)
    {
        using var file = Open(path);
        return file.Names.ToDictionary(n => n, file.Read);
    }

    public bool Contains(string name) => _byName.ContainsKey(name);

    /// <summary>The header entry of <paramref name="name"/>; throws <see cref="KeyNotFoundException"/> listing the names there are.</summary>
    public TensorInfo Info(string name)
    {
        ArgumentNullException.ThrowIfNull(name);
        if (_byName.TryGetValue(name, out var info))
        {
            return info;
        }

        var shown = string.Join(", ", Names.Take(NamesInErrors));
        var more = Names.Count > NamesInErrors ? $", ... ({Names.Count - NamesInErrors} more)" : "";
        throw new KeyNotFoundException($"'{Path}' has no tensor '{name}'. Available ({Names.Count}): {shown}{more}");
    }

    /// <summary>Reads just this tensor's bytes. Safe to call from several threads (positional reads).</summary>
    public HostTensor Read(string name)
    {
        ObjectDisposedException.ThrowIf(_disposed, this);
        var info = Info(name);
        if (info.ByteLength > Array.MaxLength)
        {
            throw new NotSupportedException(
                $"'{Path}': tensor '{name}' is {info.ByteLength} bytes, more than one host array can hold.");
        }

        var data = GC.AllocateUninitializedArray<byte>((int)info.ByteLength);
        ReadExactly(_stream.SafeFileHandle, data, _dataStart + info.Begin, Path);
        return new HostTensor(info.Name, info.DType, info.ShapeUnsafe, data, info.ElementCount);
    }

    public void Dispose()
    {
        _disposed = true;
        _stream.Dispose();
    }

    private static void ReadExactly(SafeFileHandle handle, Span<byte> buffer, long offset, string path)
    {
        while (!buffer.IsEmpty)
        {
            var n = RandomAccess.Read(handle, buffer, offset);
            if (n == 0)
            {
                throw SafetensorsHeader.Invalid(path, $"the file ended at byte {offset}, {buffer.Length} bytes short (truncated while open?)");
            }

            buffer = buffer[n..];
            offset += n;
        }
    }
}
