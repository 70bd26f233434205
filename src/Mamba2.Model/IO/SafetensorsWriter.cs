using System.Buffers;
using System.Buffers.Binary;
using System.Text.Encodings.Web;
using System.Text.Json;

namespace Mamba2.Model.IO;

/// <summary>Writes safetensors files readable by the reference (Python/Rust) implementation.</summary>
public static class SafetensorsWriter
{
    /// <summary>
    /// Writes <paramref name="tensors"/> contiguously in the order given, with "__metadata__" first in the header.
    /// The file appears atomically and durably (<see cref="DurableFiles.Write"/>).
    /// </summary>
    public static void Write(string path, IEnumerable<HostTensor> tensors, IReadOnlyDictionary<string, string>? metadata = null)
    {
        ArgumentNullException.ThrowIfNull(path);
        ArgumentNullException.ThrowIfNull(tensors);
        var list = tensors.ToList();
        CheckNames(list);
        var header = BuildHeader(list, metadata);

        DurableFiles.Write(path, stream =>
        {
            Span<byte> prefix = stackalloc byte[8];
            BinaryPrimitives.WriteUInt64LittleEndian(prefix, (ulong)header.Length);
            stream.Write(prefix);
            stream.Write(header);
            foreach (var t in list)
            {
                stream.Write(t.Data.Span);
            }
        });
    }

    private static void CheckNames(List<HostTensor> tensors)
    {
        var seen = new HashSet<string>();
        foreach (var t in tensors)
        {
            if (t is null)
            {
                throw new ArgumentException("The tensor list contains null.", nameof(tensors));
            }

            if (t.Name == SafetensorsHeader.MetadataKey)
            {
                throw new ArgumentException($"'{SafetensorsHeader.MetadataKey}' is reserved for metadata and cannot name a tensor.", nameof(tensors));
            }

            if (!seen.Add(t.Name))
            {
                throw new ArgumentException($"Tensor name '{t.Name}' appears more than once.", nameof(tensors));
            }
        }
    }

    /// <summary>The header JSON, padded with spaces so the data region starts 8-byte aligned.</summary>
    private static byte[] BuildHeader(List<HostTensor> tensors, IReadOnlyDictionary<string, string>? metadata)
    {
        var buffer = new ArrayBufferWriter<byte>();
        // Relaxed escaping keeps names like "a+b" readable; the output is still plain JSON.
        using (var json = new Utf8JsonWriter(buffer, new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            json.WriteStartObject();
            if (metadata is not null)
            {
                json.WriteStartObject(SafetensorsHeader.MetadataKey);
                foreach (var (key, value) in metadata)
                {
                    json.WriteString(key, value ?? throw new ArgumentException($"Metadata '{key}' is null.", nameof(metadata)));
                }

                json.WriteEndObject();
            }

            long offset = 0;
            foreach (var t in tensors)
            {
                json.WriteStartObject(t.Name);
                json.WriteString("dtype", t.DType.HeaderName());
                json.WriteStartArray("shape");
                foreach (var d in t.Shape)
                {
                    json.WriteNumberValue(d);
                }

                json.WriteEndArray();
                json.WriteStartArray("data_offsets");
                json.WriteNumberValue(offset);
                offset += t.Data.Length;
                json.WriteNumberValue(offset);
                json.WriteEndArray();
                json.WriteEndObject();
            }

            json.WriteEndObject();
        }

        var padded = (buffer.WrittenCount + 7) / 8 * 8;
        if (padded > SafetensorsHeader.MaxHeaderBytes)
        {
            throw new ArgumentException($"The header would be {padded} bytes, over the {SafetensorsHeader.MaxHeaderBytes}-byte limit readers accept.");
        }

        var header = new byte[padded];
        header.AsSpan().Fill((byte)' ');
        buffer.WrittenSpan.CopyTo(header);
        return header;
    }
}
