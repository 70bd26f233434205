using System.Text;
using Mamba2.Model.Generation;
using Mamba2.Tests;
using Xunit;

namespace Mamba2.Model.Tests;

/// <summary>
/// tokenizer.json through the HF tokenizers library: a byte-level BPE whose ids are known by construction
/// (tests/fixtures/tokenizer/make_byte_bpe.py: id b is the byte b, merges on top, one special token).
/// </summary>
public sealed class TokenizerTests : IDisposable
{
    private static readonly string Fixture = Path.Combine(AppContext.BaseDirectory, "fixtures", "tokenizer", "byte-bpe.json");
    private readonly string _dir = Directory.CreateTempSubdirectory("mamba2-tokenizer-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void MergesSpecialTokensUnicodeAndWhitespaceRuns()
    {
        using var t = HfTokenizer.Load(Fixture);
        Assert.Equal([259, 264], t.Encode("hello world"));                  // "hello", "Ġworld"
        Assert.Equal([259, 265, 119, 261, 263], t.Encode("hello<|endoftext|>world"));   // special kept whole; w, or, ld
        Assert.Equal("helloworld", t.Decode([259, 265, 119, 261, 263]));    // decoding leaves special tokens out

        // No merge applies: one token per UTF-8 byte, whatever the script or the whitespace.
        foreach (var text in new[] { "日本語 ✓ é", "tab\t\tand   spaces\n\nnewlines", " \u00a0x" })
        {
            var ids = t.Encode(text);
            Assert.Equal(Encoding.UTF8.GetBytes(text).Select(b => (int)b), ids);
            Assert.Equal(text, t.Decode(ids));
        }
    }

    [Fact]
    public void AModelDirectoryUsesItsTokenizerJsonElseTheByteTokenizer()
    {
        using (var bytes = HfTokenizer.ForModel(_dir, out var fallback))
        {
            Assert.True(fallback);
            Assert.Same(ByteTokenizer.Instance, bytes);
        }

        File.Copy(Fixture, Path.Combine(_dir, HfTokenizer.FileName));
        using var hf = HfTokenizer.ForModel(_dir, out var none);
        Assert.False(none);
        Assert.IsType<HfTokenizer>(hf);
        Assert.Equal([259], hf.Encode("hello"));
    }

    [Fact]
    public void BrokenFilesAreRefusedNamingTheFile()
    {
        var bad = Path.Combine(_dir, "bad.json");
        File.WriteAllText(bad, "{\"model\": {\"type\": \"Nonsense\"}}");
        Assert.Contains(bad, Assert.Throws<InvalidDataException>(() => HfTokenizer.Load(bad)).Message);
        Assert.Throws<FileNotFoundException>(() => HfTokenizer.Load(Path.Combine(_dir, "none.json")));
        using var t = HfTokenizer.Load(Fixture);
        Assert.Throws<ArgumentOutOfRangeException>(() => t.Decode([-1]));
    }

    [Fact]
    public void TheTokenizeVerbEncodesAndDecodes()
    {
        var (code, output) = Run(["tokenize", "--tokenizer", Fixture, "--text", "hello world"]);
        Assert.Equal(0, code);
        Assert.Equal("259,264", output.Trim());
        (code, output) = Run(["tokenize", "--tokenizer", Fixture, "--ids", "259, 264"]);
        Assert.Equal(0, code);
        Assert.Equal("hello world", output.Trim());
        (code, output) = Run(["tokenize", "--model", _dir, "--text", "hi"]);   // no tokenizer.json: bytes
        Assert.Equal(0, code);
        Assert.Equal("104,105", output.Trim());
        Assert.Equal(2, Run(["tokenize", "--tokenizer", Fixture, "--ids", "1,x"]).Code);
        Assert.Equal(2, Run(["tokenize", "--tokenizer", Fixture, "--ids", "259,,264"]).Code);   // an id lost between commas
        Assert.Equal(2, Run(["tokenize", "--tokenizer", Fixture, "--ids", ""]).Code);
        (code, output) = Run(["tokenize", "--tokenizer", Fixture, "--ids", "259, 264,"]);   // a trailing comma is fine
        Assert.Equal(0, code);
        Assert.Equal("hello world", output.Trim());
        Assert.Equal(2, Run(["tokenize", "--tokenizer", Fixture]).Code);
        Assert.Equal(2, Run(["tokenize", "--model", Path.Combine(_dir, "missing"), "--text", "a"]).Code);
    }

    private static (int Code, string Output) Run(string[] args)
    {
        var (code, output, _) = CliCapture.Run(args);
        return (code, output);
    }
}
