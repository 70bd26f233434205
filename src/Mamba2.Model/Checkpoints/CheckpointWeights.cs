using System.Text.Json;
using Mamba2.Model.IO;

namespace Mamba2.Model.Checkpoints;

/// <summary>
/// The weights of a checkpoint directory, whichever way they are stored: <c>model.safetensors</c>, or
/// <c>pytorch_model.bin</c> (torch.save's zip, read without running its pickle), or either sharded (the
/// <c>*.index.json</c> transformers writes: a weight_map from tensor name to file). Safetensors wins where both are.
/// </summary>
internal sealed class CheckpointWeights : IDisposable
{
    public const string SafetensorsFile = "model.safetensors";
    public const string TorchFile = "pytorch_model.bin";

    private readonly Dictionary<string, string> _fileOf;
    private readonly Dictionary<string, SafetensorsFile> _safetensors = [];
    private readonly Dictionary<string, PyTorchCheckpoint> _torch = [];

    private CheckpointWeights(string describe, Dictionary<string, string> fileOf)
    {
        Describe = describe;
        _fileOf = fileOf;
    }

    /// <summary>Which file or index the weights come from (for messages).</summary>
    public string Describe { get; }

    public static CheckpointWeights Open(string directory)
    {
        foreach (var single in new[] { SafetensorsFile, TorchFile })
        {
            var path = Path.Combine(directory, single);
            if (File.Exists(path))
            {
                var weights = new CheckpointWeights(path, []);
                foreach (var name in weights.NamesIn(path))
                {
                    weights._fileOf[name] = path;
                }

                return weights;
            }

            var index = path + ".index.json";
            if (File.Exists(index))
            {
                return new CheckpointWeights(index, WeightMap(directory, index));
            }
        }

        throw new FileNotFoundException(
            $"{directory} has no weights: none of {SafetensorsFile}, {TorchFile} or their sharded *.index.json.", Path.Combine(directory, SafetensorsFile));
    }

    public bool Contains(string name) => _fileOf.ContainsKey(name);

    public HostTensor Read(string name)
    {
        var file = _fileOf.TryGetValue(name, out var f) ? f : throw new KeyNotFoundException($"{Describe}: no tensor {name}.");
        return IsSafetensors(file) ? Opened(_safetensors, file, IO.SafetensorsFile.Open).Read(name) : Opened(_torch, file, PyTorchCheckpoint.Open).Read(name);
    }

    private IEnumerable<string> NamesIn(string path) =>
        IsSafetensors(path) ? Opened(_safetensors, path, IO.SafetensorsFile.Open).Names : Opened(_torch, path, PyTorchCheckpoint.Open).Names;

    private static bool IsSafetensors(string path) => path.EndsWith(".safetensors", StringComparison.Ordinal);

    /// <summary>Each file opened once, on first use, and closed with these weights.</summary>
    private static T Opened<T>(Dictionary<string, T> files, string path, Func<string, T> open)
    {
        if (!files.TryGetValue(path, out var f))
        {
            f = open(path);
            files[path] = f;
        }

        return f;
    }

    /// <summary>An index's weight_map, each shard a file beside it (no other directory), every shard present.</summary>
    private static Dictionary<string, string> WeightMap(string directory, string index)
    {
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(index));
            if (doc.RootElement.ValueKind != JsonValueKind.Object || !doc.RootElement.TryGetProperty("weight_map", out var map) || map.ValueKind != JsonValueKind.Object)
            {
                throw new InvalidDataException($"{index}: no weight_map object.");
            }

            var result = new Dictionary<string, string>();
            foreach (var entry in map.EnumerateObject())
            {
                var shard = entry.Value.ValueKind == JsonValueKind.String ? entry.Value.GetString()! : throw new InvalidDataException($"{index}: weight_map.{entry.Name} is not a file name.");
                if (shard != Path.GetFileName(shard) || shard is "." or "..")
                {
                    throw new InvalidDataException($"{index}: weight_map.{entry.Name} names {shard}, not a file beside the index.");
                }

                var path = Path.Combine(directory, shard);
                result[entry.Name] = File.Exists(path) ? path : throw new FileNotFoundException($"{index}: shard {shard} (of {entry.Name}) is missing.", path);
            }

            return result;
        }
        catch (JsonException e)
        {
            throw new InvalidDataException($"{index}: not JSON ({e.Message}).", e);
        }
    }

    public void Dispose()
    {
        foreach (var f in _safetensors.Values)
        {
            f.Dispose();
        }

        foreach (var f in _torch.Values)
        {
            f.Dispose();
        }
    }
}
