using System.CommandLine;
using System.Globalization;
using Mamba2.Model.Checkpoints;
using Mamba2.Model.Generation;

namespace Mamba2.Cli;

/// <summary><c>mamba2 generate</c>: new tokens from a checkpoint after a prompt (text through the model's tokenizer.json or the byte tokenizer, or ids).</summary>
internal static class GenerateCommand
{
    private static readonly Option<DirectoryInfo> Model = new("--model") { Required = true, Description = "checkpoint directory (config.json + model.safetensors)" };
    private static readonly Option<string?> Prompt = new("--prompt") { Description = "prompt text, tokenized by the model directory's tokenizer.json (else the byte tokenizer: UTF-8 bytes)" };
    private static readonly Option<string?> PromptIds = new("--prompt-ids") { Description = "prompt token ids, comma separated" };
    private static readonly Option<int> MaxNewTokens = new("--max-new-tokens") { DefaultValueFactory = _ => 32, Description = "tokens to generate" };
    private static readonly Option<float> Temperature = new("--temperature") { DefaultValueFactory = _ => 0f, Description = "0: greedy (default); otherwise softmax temperature" };
    private static readonly Option<int> TopK = new("--top-k") { DefaultValueFactory = _ => 0, Description = "keep the k most likely tokens (0: all)" };
    private static readonly Option<float> TopP = new("--top-p") { DefaultValueFactory = _ => 1f, Description = "keep the smallest set with this probability mass" };
    private static readonly Option<int> Seed = new("--seed") { DefaultValueFactory = _ => 0, Description = "sampling seed" };
    private static readonly Option<FileInfo?> Prompts = new("--prompts") { Description = "a file of prompts, one a line (blank lines skipped), each generated in turn" };
    private static readonly Option<float> RepetitionPenalty = new("--repetition-penalty")
    {
        DefaultValueFactory = _ => 1f,
        Description = "HF's: logits of ids already in the sequence divided by it where positive, multiplied where negative (1: off)",
    };

    private static readonly Option<int?> EosId = new("--eos-id") { Description = "stop after this token (default: config.json's eos_token_id)" };
    private static readonly Option<bool> IgnoreEos = new("--ignore-eos") { Description = "generate --max-new-tokens whatever is drawn" };

    public static Command Create()
    {
        return CommonOptions.GpuCommand("generate", "Generate tokens from a Mamba2 checkpoint (greedy by default), streaming text as it comes", Run,
            Model, Prompt, PromptIds, Prompts, MaxNewTokens, Temperature, TopK, TopP, RepetitionPenalty, Seed, EosId, IgnoreEos);
    }

    private static int Run(ParseResult r)
    {
        var text = r.GetValue(Prompt);
        var idsText = r.GetValue(PromptIds);
        var file = r.GetValue(Prompts);
        if (new object?[] { text, idsText, file }.Count(x => x is not null) != 1)
        {
            throw new ArgumentException("give exactly one of --prompt TEXT, --prompt-ids 1,2,3 and --prompts FILE.");
        }

        var max = r.GetValue(MaxNewTokens);
        var (temperature, penalty) = (r.GetValue(Temperature), r.GetValue(RepetitionPenalty));
        if (max < 0 || r.GetValue(TopK) < 0 || !(r.GetValue(TopP) is > 0 and <= 1) || !(temperature >= 0 && float.IsFinite(temperature))
            || !(penalty > 0 && float.IsFinite(penalty)))
        {
            throw new ArgumentException("--max-new-tokens, --top-k and --temperature must be >= 0 (and finite), --top-p in (0, 1] and --repetition-penalty finite and > 0.");
        }

        if (file is not null)
        {
            CommonOptions.CheckInputFile("--prompts", file);
        }

        var texts = file is not null ? [.. File.ReadAllLines(file.FullName).Where(l => !string.IsNullOrWhiteSpace(l))] : text is not null ? new List<string> { text } : null;
        if (texts is { Count: 0 })
        {
            throw new InvalidDataException($"--prompts {file!.FullName}: no prompts (every line is blank).");
        }

        var modelDir = r.GetValue(Model)!.FullName;
        using var tokenizer = texts is null ? null : CommonOptions.ModelTokenizer(modelDir);   // ids prompts print ids only
        List<int[]> prompts = tokenizer is not null ? [.. texts!.Select(tokenizer.Encode)] : [CommonOptions.ParseIds("--prompt-ids", idsText!)];
        using var device = CommonOptions.Open(r);
        if (CommonOptions.ResolvePrecision(r, device) is not { } precision)
        {
            return 2;
        }

        using var lm = Mamba2Checkpoint.Load(device, modelDir);
        var outside = prompts.SelectMany(p => p).Where(id => id < 0 || id >= lm.Config.VocabSize).ToList();
        if (prompts.Any(p => p.Length == 0) || outside.Count > 0)
        {
            throw new ArgumentException(outside.Count > 0 ? $"prompt token {outside[0]} is outside the model's vocabulary [0, {lm.Config.VocabSize})." : "a prompt encodes to no tokens.");
        }

        if (r.GetValue(EosId) is { } eosId && (eosId < 0 || eosId >= lm.Config.VocabSize))
        {
            throw new ArgumentException($"--eos-id {eosId} is outside the model's vocabulary [0, {lm.Config.VocabSize}).");
        }

        lm.Precision = precision;
        var sampling = new SamplingOptions(temperature, r.GetValue(TopK), r.GetValue(TopP), r.GetValue(Seed), penalty);
        var eos = r.GetValue(IgnoreEos) ? null : r.GetValue(EosId) ?? lm.Config.EosTokenId;
        foreach (var prompt in prompts)
        {
            var clock = System.Diagnostics.Stopwatch.StartNew();
            var stream = tokenizer is null ? null : new TextStream(tokenizer);
            var generated = Generator.Generate(lm, prompt, max, sampling, eos, stream is null ? null : stream.Add);
            stream?.Finish();
            var seconds = clock.Elapsed.TotalSeconds;
            Console.WriteLine(string.Join(",", generated));
            Console.Error.WriteLine($"{generated.Count} tokens after a prompt of {prompt.Length} in {seconds:F2} s ({generated.Count / Math.Max(seconds, 1e-9):F1} tokens/s)"
                + (eos is { } e && generated.Count > 0 && generated[^1] == e ? "; stopped at end of text" : ""));
        }

        return 0;
    }

    /// <summary>
    /// Prints generated text as tokens arrive: the decoding of all ids so far, less what is already printed, holding
    /// back a trailing U+FFFD (a character whose bytes are not all drawn yet). Where a decoder rewrites earlier text
    /// (the decoding of more ids no longer starts with what was printed), streaming stops and the whole text follows
    /// on its own line at the end, so the last text line is always the complete decoding.
    /// </summary>
    private sealed class TextStream(ITokenizer tokenizer)
    {
        private readonly List<int> _ids = [];
        private string _printed = "";
        private bool _broken;

        public void Add(int id)
        {
            _ids.Add(id);
            var text = tokenizer.Decode(_ids);
            if (_broken || !text.StartsWith(_printed, StringComparison.Ordinal))
            {
                _broken = true;
                return;
            }

            var ready = text.TrimEnd('\uFFFD');
            if (ready.Length > _printed.Length)
            {
                Console.Write(ready[_printed.Length..]);
                Console.Out.Flush();
                _printed = ready;
            }
        }

        public void Finish()
        {
            var text = tokenizer.Decode(_ids);
            Console.WriteLine(_broken ? "\n" + text : text[_printed.Length..]);
        }
    }
}
