namespace Mamba2.Model.Generation;

/// <summary>Text to token ids and back: a model directory's tokenizer.json (<see cref="HfTokenizer"/>) or the byte tokenizer.</summary>
public interface ITokenizer : IDisposable
{
    /// <summary>What it is, for messages: the file it came from, or "byte-level".</summary>
    string Description { get; }

    int[] Encode(string text);

    /// <summary>The text of <paramref name="ids"/> (special tokens left out, as the HF tokenizers library decodes).</summary>
    string Decode(IEnumerable<int> ids);
}
