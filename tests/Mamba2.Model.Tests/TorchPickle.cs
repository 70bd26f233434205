using System.IO.Compression;
using System.Text;

namespace Mamba2.Model.Tests;

/// <summary>
/// Writes pickles opcode by opcode and packs them as torch.save's zip does (archive/data.pkl, archive/data/KEY,
/// archive/byteorder): for tests of the reader's refusals and its view arithmetic. Files from torch itself are in
/// the fixtures.
/// </summary>
internal sealed class TorchPickle
{
    private readonly List<byte> _b = [0x80, 0x02];

    public byte[] Bytes => [.. _b, (byte)'.'];

    public TorchPickle Op(char c)
    {
        _b.Add((byte)c);
        return this;
    }

    public TorchPickle Global(string module, string name)
    {
        _b.Add((byte)'c');
        _b.AddRange(Encoding.ASCII.GetBytes($"{module}\n{name}\n"));
        return this;
    }

    public TorchPickle Str(string s)
    {
        var bytes = Encoding.UTF8.GetBytes(s);
        _b.Add((byte)'X');
        _b.AddRange(BitConverter.GetBytes(bytes.Length));
        _b.AddRange(bytes);
        return this;
    }

    public TorchPickle Int(int v)
    {
        _b.Add((byte)'J');
        _b.AddRange(BitConverter.GetBytes(v));
        return this;
    }

    public TorchPickle Tuple(params int[] values)
    {
        Op('(');
        foreach (var v in values)
        {
            Int(v);
        }

        return Op('t');
    }

    /// <summary>torch._utils._rebuild_tensor_v2(storage KEY of TYPE, offset, size, stride, False, OrderedDict()).</summary>
    public TorchPickle Tensor(string storageType, string key, int numel, int offset, int[] size, int[] stride)
    {
        Global("torch._utils", "_rebuild_tensor_v2").Op('(');
        Op('(').Str("storage").Global("torch", storageType).Str(key).Str("cpu").Int(numel).Op('t').Op('Q');
        Int(offset).Tuple(size).Tuple(stride);
        _b.Add(0x89);   // False
        Global("collections", "OrderedDict").Op(')').Op('R');
        return Op('t').Op('R');
    }

    public static void WriteZip(string path, byte[] pickle, params (string Key, byte[] Data)[] storages)
    {
        File.Delete(path);
        using var zip = ZipFile.Open(path, ZipArchiveMode.Create);
        void Add(string name, byte[] data)
        {
            using var s = zip.CreateEntry("archive/" + name, CompressionLevel.NoCompression).Open();
            s.Write(data);
        }

        Add("data.pkl", pickle);
        Add("byteorder", Encoding.ASCII.GetBytes("little"));
        foreach (var (key, data) in storages)
        {
            Add("data/" + key, data);
        }
    }
}
