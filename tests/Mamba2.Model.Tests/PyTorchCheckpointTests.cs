using Mamba2.Model.IO;
using Xunit;

namespace Mamba2.Model.Tests;

/// <summary>torch.save's zip read without running its pickle: views of shared storages, and refusals.</summary>
public sealed class PyTorchCheckpointTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("mamba2-torch-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static byte[] Floats(int n) => [.. Enumerable.Range(0, n).SelectMany(i => BitConverter.GetBytes((float)i))];

    [Fact]
    public void SharedStoragesOffsetsAndStridedViewsReadAsTorchGivesThem()
    {
        // A state dict of three views of one 12-float storage (as tied weights and slices are saved) and one bf16 tensor.
        var p = new TorchPickle().Global("collections", "OrderedDict").Op(')').Op('R').Op('(');
        p.Str("whole").Tensor("FloatStorage", "0", 12, 0, [3, 4], [4, 1]);
        p.Str("rows").Tensor("FloatStorage", "0", 12, 4, [2, 4], [4, 1]);          // rows 1-2: an offset
        p.Str("transposed").Tensor("FloatStorage", "0", 12, 0, [4, 3], [1, 4]);    // .t(): strided
        p.Str("half").Tensor("BFloat16Storage", "1", 2, 1, [1], [1]);
        var path = Path.Combine(_dir, "pytorch_model.bin");
        TorchPickle.WriteZip(path, p.Op('u').Bytes, ("0", Floats(12)), ("1", [0x00, 0x3F, 0x80, 0x3F]));

        var all = PyTorchCheckpoint.ReadAll(path);
        Assert.Equal(["whole", "rows", "transposed", "half"], all.Keys);
        Assert.Equal(Enumerable.Range(0, 12).Select(i => (float)i), all["whole"].ToFloat32());
        Assert.Equal([3, 4], all["whole"].Shape);
        Assert.Equal(Enumerable.Range(4, 8).Select(i => (float)i), all["rows"].ToFloat32());
        Assert.Equal([0f, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11], all["transposed"].ToFloat32());
        Assert.Equal(SafetensorsDType.BF16, all["half"].DType);
        Assert.Equal([1f], all["half"].ToFloat32());   // 0x3F80, the second element
    }

    [Fact]
    public void APickleThatCallsOsSystemIsRefusedUnread()
    {
        var marker = Path.Combine(_dir, "ran");
        var p = new TorchPickle().Global("os", "system").Op('(').Str($"touch {marker}").Op('t').Op('R');
        var path = Path.Combine(_dir, "evil.bin");
        TorchPickle.WriteZip(path, p.Bytes);
        var e = Assert.Throws<InvalidDataException>(() => PyTorchCheckpoint.Open(path));
        Assert.Contains("os.system", e.Message);
        Assert.Contains("refused", e.Message);
        Assert.False(File.Exists(marker));

        // Also as a tensor's storage type or inside the arguments of an allowed call.
        var nested = new TorchPickle().Global("torch._utils", "_rebuild_parameter").Op('(').Global("builtins", "eval").Op('(').Str("1").Op('t').Op('R').Op('t').Op('R');
        TorchPickle.WriteZip(path, nested.Bytes);
        Assert.Contains("builtins.eval", Assert.Throws<InvalidDataException>(() => PyTorchCheckpoint.Open(path)).Message);
    }

    [Fact]
    public void BrokenFilesAreRefusedNamingTheFile()
    {
        var path = Path.Combine(_dir, "bad.bin");
        File.WriteAllBytes(path, [0x80, 0x02, 0x8a, 0x0a]);   // the legacy (pre-1.6) format is a bare pickle stream
        Assert.Contains("not the zip format", Assert.Throws<InvalidDataException>(() => PyTorchCheckpoint.Open(path)).Message);

        var outside = new TorchPickle().Op('}').Op('(').Str("w").Tensor("FloatStorage", "0", 4, 2, [2, 2], [2, 1]).Op('u');
        TorchPickle.WriteZip(path, outside.Bytes, ("0", Floats(4)));
        Assert.Contains("reaches past its storage", Assert.Throws<InvalidDataException>(() => PyTorchCheckpoint.ReadAll(path)).Message);

        TorchPickle.WriteZip(path, outside.Bytes);   // the storage's bytes are missing
        Assert.Contains("missing from the archive", Assert.Throws<InvalidDataException>(() => PyTorchCheckpoint.ReadAll(path)).Message);

        TorchPickle.WriteZip(path, new TorchPickle().Str("not a dict").Bytes);
        Assert.Contains("not a state dict", Assert.Throws<InvalidDataException>(() => PyTorchCheckpoint.Open(path)).Message);
        Assert.Throws<FileNotFoundException>(() => PyTorchCheckpoint.Open(Path.Combine(_dir, "none.bin")));
    }
}
