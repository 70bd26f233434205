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

    public static Command Create()
    {
        return CommonOptions.GpuCommand("generate", "Generate tokens from a Mamba2 checkpoint (greedy by default)", Run,
            Model, Prompt, PromptIds, MaxNewTokens, Temperature, TopK, TopP, Seed);
    }

    private static int Run(ParseResult r)
    {
        var text = r.GetValue(Prompt);
        var idsText = r.GetValue(PromptIds);
        if ((text is null) == (idsText is null))
        {
            throw new ArgumentException("give exactly one of --prompt TEXT and --prompt-ids 1,2,3.");
        }

        var modelDir = r.GetValue(Model)!.FullName;
        using var tokenizer = HfTokenizer.ForModel(modelDir, out var byteFallback);
        if (text is not null && byteFallback)
        {
            Console.Error.WriteLine($"note: {modelDir} has no {HfTokenizer.FileName}; the prompt goes through the byte tokenizer (a token per UTF-8 byte).");
        }

        int[] prompt = text is not null ? tokenizer.Encode(text)
            : [.. idsText!.Split(',', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries)
                .Select(s => int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) ? v : throw new FormatException($"--prompt-ids: '{s}' is not an integer."))];
        var max = r.GetValue(MaxNewTokens);
        if (max < 0 || r.GetValue(TopK) < 0 || !(r.GetValue(TopP) is > 0 and <= 1) || r.GetValue(Temperature) < 0)
        {
            throw new ArgumentException("--max-new-tokens, --top-k and --temperature must be >= 0 and --top-p in (0, 1].");
        }

        using var device = CommonOptions.Open(r);
        if (CommonOptions.ResolvePrecision(r, device, "generate", CommonOptions.AllPrecisions) is not { } precision)
        {
            return 2;
        }

        using var lm = Mamba2Checkpoint.Load(device, modelDir);
        var outside = prompt.Where(id => id < 0 || id >= lm.Config.VocabSize).ToList();
        if (outside.Count > 0)
        {
            throw new ArgumentException($"prompt token {outside[0]} is outside the model's vocabulary [0, {lm.Config.VocabSize}).");
        }

        lm.Precision = precision;
        var sampling = new SamplingOptions(r.GetValue(Temperature), r.GetValue(TopK), r.GetValue(TopP), r.GetValue(Seed));
        var generated = Generator.Generate(lm, prompt, max, sampling);
        Console.WriteLine(string.Join(",", generated));
        if (text is not null)
        {
            Console.WriteLine(tokenizer.Decode(generated));
        }

        return 0;
    }
}
