using System.Text;
using System.Text.Json;
using Mamba2.Model.Tensors;

namespace Mamba2.Model.IO;

/// <summary>Parses and validates the JSON header of a safetensors file.</summary>
internal sealed class SafetensorsHeader
{
    /// <summary>Real headers are kilobytes; anything past this is a corrupt length or not a safetensors file.</summary>
    public const long MaxHeaderBytes = 100L * 1024 * 1024;

    public const string MetadataKey = "__metadata__";

    private SafetensorsHeader(List<TensorInfo> tensors, Dictionary<string, string> metadata)
    {
        Tensors = tensors;
        Metadata = metadata;
    }

    /// <summary>Entries in header order.</summary>
    public IReadOnlyList<TensorInfo> Tensors { get; }

    public Dictionary<string, string> Metadata { get; }

    /// <summary>Parses <paramref name="json"/>, checking every entry against a data region of <paramref name="dataLength"/> bytes.</summary>
    public static SafetensorsHeader Parse(byte[] json, long dataLength, string file)
    {
        try
        {
            using var doc = JsonDocument.Parse(json);
            return FromRoot(doc.RootElement, dataLength, file);
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or DecoderFallbackException)
        {
            // JsonDocument reports bad UTF-8 inside strings only when a string is read, as InvalidOperationException.
            throw Invalid(file, $"the {json.Length}-byte header is not valid UTF-8 JSON ({e.Message})", e);
        }
    }

    public static InvalidDataException Invalid(string file, string problem, Exception? inner = null) =>
        new($"Invalid safetensors file '{file}': {problem}.", inner);

    private static SafetensorsHeader FromRoot(JsonElement root, long dataLength, string file)
    {
        if (root.ValueKind != JsonValueKind.Object)
        {
            throw Invalid(file, $"the header must be a JSON object, got {root.ValueKind}");
        }

        var tensors = new List<TensorInfo>();
        var metadata = new Dictionary<string, string>();
        var seen = new HashSet<string>();
        foreach (var entry in root.EnumerateObject())
        {
            if (!seen.Add(entry.Name))
            {
                throw Invalid(file, $"key '{entry.Name}' appears twice in the header");
            }

            if (entry.Name == MetadataKey)
            {
                metadata = ParseMetadata(entry.Value, file);
            }
            else
            {
                tensors.Add(ParseTensor(entry.Name, entry.Value, dataLength, file));
            }
        }

        CheckNoOverlap(tensors, file);
        return new SafetensorsHeader(tensors, metadata);
    }

    private static Dictionary<string, string> ParseMetadata(JsonElement value, string file)
    {
        if (value.ValueKind != JsonValueKind.Object)
        {
            throw Invalid(file, $"\"{MetadataKey}\" must be an object of strings, got {value.ValueKind}");
        }

        var metadata = new Dictionary<string, string>();
        foreach (var item in value.EnumerateObject())
        {
            if (item.Value.ValueKind != JsonValueKind.String)
            {
                throw Invalid(file, $"\"{MetadataKey}\" must be an object of strings, but '{item.Name}' is {item.Value.ValueKind}");
            }

            metadata[item.Name] = item.Value.GetString()!;
        }

        return metadata;
    }

    private static TensorInfo ParseTensor(string name, JsonElement value, long dataLength, string file)
    {
        if (value.ValueKind != JsonValueKind.Object)
        {
            throw Invalid(file, $"tensor '{name}': the entry must be a JSON object, got {value.ValueKind}");
        }

        if (!value.TryGetProperty("dtype", out var dtypeJson) || dtypeJson.ValueKind != JsonValueKind.String)
        {
            throw Invalid(file, $"tensor '{name}': missing or non-string \"dtype\"");
        }

        var dtypeText = dtypeJson.GetString()!;
        if (!SafetensorsDTypes.TryParse(dtypeText, out var dtype))
        {
            throw Invalid(file, $"tensor '{name}' has dtype '{dtypeText}', which is not supported (supported: {SafetensorsDTypes.SupportedList})");
        }

        var shapeValues = ReadNonNegativeIntegers(value, "shape", name, file);
        var shape = new int[shapeValues.Length];
        for (var i = 0; i < shape.Length; i++)
        {
            if (shapeValues[i] > int.MaxValue)
            {
                throw Invalid(file, $"tensor '{name}': dimension {shapeValues[i]} of \"shape\" exceeds {int.MaxValue}");
            }

            shape[i] = (int)shapeValues[i];
        }

        var offsets = ReadNonNegativeIntegers(value, "data_offsets", name, file);
        if (offsets.Length != 2)
        {
            throw Invalid(file, $"tensor '{name}': \"data_offsets\" must hold exactly two integers [begin, end], got {offsets.Length}");
        }

        var (begin, end) = (offsets[0], offsets[1]);
        if (end < begin)
        {
            throw Invalid(file, $"tensor '{name}': data_offsets [{begin}, {end}] end before they begin");
        }

        if (end > dataLength)
        {
            throw Invalid(file, $"tensor '{name}': data_offsets [{begin}, {end}] lie outside the {dataLength}-byte data region");
        }

        var count = HostTensor.TryCountElements(shape);
        var size = dtype.ElementSize();
        long? expected = count is long c && c <= long.MaxValue / size ? c * size : null;
        if (expected != end - begin)
        {
            var needs = expected is long bytes ? $"needs {bytes} bytes" : "is too large to address";
            throw Invalid(
                file,
                $"tensor '{name}': {dtypeText} shape {ShapeOps.Format(shape)} {needs} but data_offsets [{begin}, {end}] cover {end - begin}");
        }

        return new TensorInfo(name, dtype, shape, begin, end, count!.Value);
    }

    private static long[] ReadNonNegativeIntegers(JsonElement entry, string field, string name, string file)
    {
        if (!entry.TryGetProperty(field, out var array))
        {
            throw Invalid(file, $"tensor '{name}': missing \"{field}\"");
        }

        if (array.ValueKind != JsonValueKind.Array)
        {
            throw Invalid(file, $"tensor '{name}': \"{field}\" must be an array of non-negative integers, got {array.GetRawText()}");
        }

        var values = new long[array.GetArrayLength()];
        var i = 0;
        foreach (var item in array.EnumerateArray())
        {
            if (item.ValueKind != JsonValueKind.Number || !item.TryGetInt64(out var v) || v < 0)
            {
                throw Invalid(file, $"tensor '{name}': \"{field}\" must be an array of non-negative integers, got {array.GetRawText()}");
            }

            values[i++] = v;
        }

        return values;
    }

    private static void CheckNoOverlap(List<TensorInfo> tensors, string file)
    {
        // Empty tensors occupy no bytes, so they cannot overlap anything.
        var sorted = tensors.Where(t => t.ByteLength > 0).OrderBy(t => t.Begin).ToList();
        TensorInfo? previous = null;
        foreach (var t in sorted)
        {
            if (previous is not null && t.Begin < previous.End)
            {
                throw Invalid(
                    file,
                    $"tensors '{previous.Name}' [{previous.Begin}, {previous.End}) and '{t.Name}' [{t.Begin}, {t.End}) overlap");
            }

            previous = t;
        }
    }
}
