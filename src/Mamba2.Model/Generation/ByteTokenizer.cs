using System.Text;

namespace Mamba2.Model.Generation;

/// <summary>The built-in byte-level tokenizer: a token is one UTF-8 byte (ids 0..255; larger ids are not text).</summary>
public sealed class ByteTokenizer : ITokenizer
{
    public const int VocabSize = 256;

    public static ByteTokenizer Instance { get; } = new();

    public string Description => "byte-level (a token per UTF-8 byte)";

    public int[] Encode(string text) => [.. Encoding.UTF8.GetBytes(text).Select(b => (int)b)];

    /// <summary>Text of the ids below 256 (invalid UTF-8 shows as U+FFFD); other ids are skipped.</summary>
    public string Decode(IEnumerable<int> ids) => Encoding.UTF8.GetString([.. ids.Where(i => i is >= 0 and < VocabSize).Select(i => (byte)i)]);

    public void Dispose()
    {
    }
}
