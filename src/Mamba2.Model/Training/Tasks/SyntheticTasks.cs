namespace Mamba2.Model.Training.Tasks;

/// <summary>
/// Selective copy (the Mamba paper): <c>Tokens</c> data tokens scattered among noise (token 0) in the first
/// L - Tokens - 1 positions, then a separator, then the data tokens again; each position from the separator on
/// must predict the next data token (so the answer is read back in order, next-token style).
/// </summary>
public sealed class SelectiveCopyTask : TrainingTask
{
    private readonly int _seqLen;
    private readonly int _tokens;
    private readonly int _vocab;

    public SelectiveCopyTask(int seqLen = 64, int tokens = 8, int vocab = 16)
    {
        if (tokens < 1 || vocab < 3 || seqLen < 2 * tokens + 1)
        {
            throw new ArgumentException($"selective copy: needs tokens >= 1 (got {tokens}), vocab >= 3 (noise, separator and a data token; got {vocab}) and seqlen >= 2 tokens + 1 = {2 * tokens + 1} (got {seqLen}).");
        }

        (_seqLen, _tokens, _vocab) = (seqLen, tokens, vocab);
    }

    public override string Name => "selective-copy";

    public override int VocabSize => _vocab;

    public override int SeqLen => _seqLen;

    private int Separator => _vocab - 1;

    protected override void Fill(Random rng, Span<int> inputs, Span<int> targets)
    {
        var region = _seqLen - _tokens - 1;
        var slots = Enumerable.Range(0, region).OrderBy(_ => rng.Next()).Take(_tokens).Order().ToArray();
        var data = new int[_tokens];
        for (var i = 0; i < _tokens; i++)
        {
            data[i] = 1 + rng.Next(_vocab - 2);   // 0 is noise, the last id the separator
            inputs[slots[i]] = data[i];
        }

        inputs[region] = Separator;
        for (var i = 0; i < _tokens; i++)
        {
            inputs[region + 1 + i] = data[i];
            targets[region + i] = data[i];   // at the separator: the first token; then each next one
        }
    }
}

/// <summary>
/// Multi-query associative recall (MQAR, Zoology): <c>Pairs</c> key-value pairs, then the keys again in a random
/// order; after each queried key the model must predict its value.
/// </summary>
public sealed class AssociativeRecallTask : TrainingTask
{
    /// <summary>The keys the CLI's task draws from (and its values as many).</summary>
    public const int DefaultKeys = 32;

    private readonly int _pairs, _keys, _values;

    public AssociativeRecallTask(int pairs = 8, int keys = DefaultKeys, int values = DefaultKeys)
    {
        if (pairs < 1 || keys < pairs || values < 1)
        {
            throw new ArgumentException($"associative recall: needs pairs >= 1 (got {pairs}), keys >= pairs (each pair a distinct key; got {keys}) and values >= 1 (got {values}).");
        }

        (_pairs, _keys, _values) = (pairs, keys, values);
    }

    public override string Name => "associative-recall";

    public override int VocabSize => _keys + _values;

    public override int SeqLen => 4 * _pairs;

    protected override void Fill(Random rng, Span<int> inputs, Span<int> targets)
    {
        var k = Enumerable.Range(0, _keys).OrderBy(_ => rng.Next()).Take(_pairs).ToArray();
        var v = Enumerable.Range(0, _pairs).Select(_ => _keys + rng.Next(_values)).ToArray();
        for (var i = 0; i < _pairs; i++)
        {
            inputs[2 * i] = k[i];
            inputs[2 * i + 1] = v[i];
        }

        var order = Enumerable.Range(0, _pairs).OrderBy(_ => rng.Next()).ToArray();
        for (var j = 0; j < _pairs; j++)
        {
            var at = 2 * _pairs + 2 * j;
            inputs[at] = k[order[j]];
            inputs[at + 1] = v[order[j]];
            targets[at] = v[order[j]];   // the key's position predicts its value
        }
    }
}

/// <summary>
/// Sequence reversal, position by position: the logits at position t must give the token at L - 1 - t. A causal
/// model has not seen it for the first half; a bidirectional one has.
/// </summary>
public sealed class ReverseTask : TrainingTask
{
    private readonly int _seqLen;
    private readonly int _vocab;

    public ReverseTask(int seqLen = 32, int vocab = 16)
    {
        if (seqLen < 1 || vocab < 2)
        {
            throw new ArgumentException($"reversal: needs seqlen >= 1 (got {seqLen}) and vocab >= 2 (got {vocab}).");
        }

        (_seqLen, _vocab) = (seqLen, vocab);
    }

    public override string Name => "reverse";

    public override int VocabSize => _vocab;

    public override int SeqLen => _seqLen;

    public override bool NeedsBidirectional => true;

    protected override void Fill(Random rng, Span<int> inputs, Span<int> targets)
    {
        for (var t = 0; t < _seqLen; t++)
        {
            inputs[t] = rng.Next(_vocab);
        }

        for (var t = 0; t < _seqLen; t++)
        {
            targets[t] = inputs[_seqLen - 1 - t];
        }
    }
}

/// <summary>Byte-level language modelling on a text file: random windows, next-token targets (vocabulary 256).</summary>
public sealed class TextTask : TrainingTask
{
    private readonly int[] _tokens;
    private readonly int _seqLen;

    /// <summary>Byte-level: a token per byte of the file (vocabulary 256).</summary>
    public TextTask(string path, int seqLen = 128)
        : this(path, [.. File.ReadAllBytes(path).Select(b => (int)b)], 256, seqLen)
    {
    }

    private TextTask(string path, int[] tokens, int vocabSize, int seqLen)
    {
        _tokens = tokens;
        _seqLen = seqLen;
        VocabSize = vocabSize;
        if (_tokens.Length < seqLen + 1)
        {
            throw new ArgumentException($"{path} has {_tokens.Length} tokens; a sequence of {seqLen} needs at least {seqLen + 1}.", nameof(path));
        }
    }

    /// <summary>
    /// The file's text through <paramref name="tokenizer"/> (a model's tokenizer.json when fine-tuning), for a model
    /// of <paramref name="vocabSize"/> tokens; a token id at or past it is refused, naming the file.
    /// </summary>
    public static TextTask Tokenized(string path, Generation.ITokenizer tokenizer, int vocabSize, int seqLen = 128)
    {
        var tokens = tokenizer.Encode(File.ReadAllText(path));
        var outside = tokens.Where(t => t < 0 || t >= vocabSize).Take(1).ToList();
        if (outside.Count > 0)
        {
            throw new InvalidDataException($"{path}: {tokenizer.Description} gives token {outside[0]}, outside the model's vocabulary [0, {vocabSize}).");
        }

        return new TextTask(path, tokens, vocabSize, seqLen);
    }

    public override string Name => "text";

    public override int VocabSize { get; }

    public override int SeqLen => _seqLen;

    protected override void Fill(Random rng, Span<int> inputs, Span<int> targets)
    {
        var start = rng.Next(_tokens.Length - _seqLen);
        for (var t = 0; t < _seqLen; t++)
        {
            inputs[t] = _tokens[start + t];
            targets[t] = _tokens[start + t + 1];
        }
    }
}
