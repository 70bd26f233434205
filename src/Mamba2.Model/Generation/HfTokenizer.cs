namespace Mamba2.Model.Generation;

/// <summary>
/// A tokenizer.json through the HF tokenizers library itself (its Rust code, by Tokenizers.DotNet), so ids are the
/// ones transformers' fast tokenizers give: encoding adds what the file's post-processor adds, decoding leaves out
/// special tokens.
/// </summary>
public sealed class HfTokenizer : ITokenizer
{
    public const string FileName = "tokenizer.json";

    /// <summary>The files a model directory's tokenizer is made of (transformers reads the last two beside the first).</summary>
    public static readonly IReadOnlyList<string> Files = [FileName, "tokenizer_config.json", "special_tokens_map.json"];

    /// <summary>The paths of those <see cref="Files"/> that <paramref name="directory"/> has (to copy beside a checkpoint).</summary>
    public static List<string> FilesIn(string directory) => [.. Files.Select(f => Path.Combine(directory, f)).Where(File.Exists)];

    private readonly Tokenizers.DotNet.Tokenizer _tokenizer;

    private HfTokenizer(Tokenizers.DotNet.Tokenizer tokenizer, string path)
    {
        _tokenizer = tokenizer;
        Description = path;
    }

    public string Description { get; }

    /// <summary>Loads <paramref name="path"/>; a missing or malformed file throws naming it.</summary>
    public static HfTokenizer Load(string path)
    {
        if (!File.Exists(path))
        {
            throw new FileNotFoundException($"{path}: no such tokenizer file.", path);
        }

        try
        {
            return new HfTokenizer(new Tokenizers.DotNet.Tokenizer(path), path);
        }
        catch (Tokenizers.DotNet.TokenizerException e)
        {
            throw new InvalidDataException($"{path}: the tokenizers library cannot read it ({e.Message}).", e);
        }
        catch (Exception e) when (e is DllNotFoundException or BadImageFormatException or EntryPointNotFoundException)
        {
            throw new PlatformNotSupportedException($"{path}: the HF tokenizers runtime is shipped for linux-x64 only, and this is {System.Runtime.InteropServices.RuntimeInformation.RuntimeIdentifier}.", e);
        }
    }

    public int[] Encode(string text)
    {
        try
        {
            return [.. _tokenizer.Encode(text).Select(id => checked((int)id))];
        }
        catch (Tokenizers.DotNet.TokenizerException e)
        {
            throw new InvalidDataException($"{Description}: cannot encode the text ({e.Message}).", e);
        }
    }

    public string Decode(IEnumerable<int> ids)
    {
        var list = ids.ToList();
        if (list.Any(i => i < 0))
        {
            throw new ArgumentOutOfRangeException(nameof(ids), $"{Description}: token ids are never negative.");
        }

        try
        {
            return _tokenizer.Decode([.. list.Select(i => (uint)i)]);
        }
        catch (Tokenizers.DotNet.TokenizerException e)
        {
            throw new InvalidDataException($"{Description}: cannot decode the ids ({e.Message}).", e);
        }
    }

    /// <summary>
    /// A model directory's tokenizer: its tokenizer.json, else the byte tokenizer (<paramref name="fallback"/> true,
    /// for the caller to say so).
    /// </summary>
    public static ITokenizer ForModel(string directory, out bool fallback)
    {
        var path = Path.Combine(directory, FileName);
        fallback = !File.Exists(path);
        return fallback ? ByteTokenizer.Instance : Load(path);
    }

    public void Dispose() => _tokenizer.Dispose();
}
