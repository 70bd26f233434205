using System.CommandLine;
using Mamba2.Model.Generation;

namespace Mamba2.Cli;

/// <summary>
/// <c>mamba2 tokenize</c>: text to token ids, or ids back to text, with a model directory's tokenizer.json (the HF
/// tokenizers library's own code) or a tokenizer.json named directly; the byte tokenizer where a model has none.
/// </summary>
internal static class TokenizeCommand
{
    private static readonly Option<DirectoryInfo?> Model = new("--model") { Description = "model directory: its tokenizer.json, else the byte tokenizer" };
    private static readonly Option<FileInfo?> Tokenizer = new("--tokenizer") { Description = "a tokenizer.json (instead of --model)" };
    private static readonly Option<string?> Text = new("--text") { Description = "text to encode: prints the ids, comma separated" };
    private static readonly Option<string?> Ids = new("--ids") { Description = "ids to decode, comma separated: prints the text" };

    public static Command Create()
    {
        var cmd = new Command("tokenize", "Encode text to token ids or decode ids to text with a model's tokenizer");
        foreach (var o in new Option[] { Model, Tokenizer, Text, Ids })
        {
            cmd.Options.Add(o);
        }

        cmd.SetAction(Run);
        return cmd;
    }

    private static int Run(ParseResult r)
    {
        var (model, file, text, ids) = (r.GetValue(Model), r.GetValue(Tokenizer), r.GetValue(Text), r.GetValue(Ids));
        if ((model is null) == (file is null))
        {
            throw new ArgumentException("give exactly one of --model DIR and --tokenizer FILE.");
        }

        if ((text is null) == (ids is null))
        {
            throw new ArgumentException("give exactly one of --text TEXT and --ids 1,2,3.");
        }

        if (model is not null && !model.Exists)
        {
            throw new DirectoryNotFoundException($"--model {model.FullName}: no such directory.");
        }

        using var tokenizer = file is not null ? HfTokenizer.Load(file.FullName) : CommonOptions.ModelTokenizer(model!.FullName);

        if (text is not null)
        {
            Console.WriteLine(string.Join(",", tokenizer.Encode(text)));
            return 0;
        }

        var parsed = CommonOptions.ParseIds("--ids", ids!);
        if (parsed.Any(v => v < 0))
        {
            throw new FormatException($"--ids: '{parsed.First(v => v < 0)}' is not a token id (a whole number >= 0).");
        }

        Console.WriteLine(tokenizer.Decode(parsed));
        return 0;
    }
}
