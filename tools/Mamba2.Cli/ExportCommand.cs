using System.CommandLine;
using Mamba2.Model.Checkpoints;
using Mamba2.Model.Generation;
using Mamba2.Model.IO;

namespace Mamba2.Cli;

/// <summary>
/// <c>mamba2 export</c>: a checkpoint (HF or mamba_ssm layout, any weight dtype, a training run's step directory
/// included) rewritten in either layout with F32, BF16 or F16 weights, for inference, transformers or mamba_ssm,
/// its tokenizer files beside it. On the host: no device needed.
/// </summary>
internal static class ExportCommand
{
    private static readonly Option<DirectoryInfo> Model = new("--model") { Required = true, Description = "checkpoint directory (config.json + model.safetensors, HF or mamba_ssm layout)" };
    private static readonly Option<DirectoryInfo> Out = new("--out") { Required = true, Description = "directory to write the checkpoint to (must not exist unless --overwrite)" };
    private static readonly Option<string?> Layout = new("--layout")
    {
        HelpName = "hf|mamba-ssm",
        Description = "hf: transformers' config.json and model.safetensors; mamba-ssm: mamba_ssm's config.json and pytorch_model.bin (default: hf, unless only mamba_ssm's describes the model)",
    };
    private static readonly Option<string> DType = new("--dtype")
    {
        DefaultValueFactory = _ => "bf16",
        HelpName = "bf16|f16|f32",
        Description = "the stored weights' type (rounded to nearest even); config.json's torch_dtype says it",
    };

    private static readonly Option<bool> Overwrite = new("--overwrite") { Description = "replace --out if it exists" };

    public static Command Create()
    {
        var cmd = new Command("export", "Write a checkpoint in HF or mamba_ssm layout with bf16, f16 or f32 weights");
        cmd.Options.Add(Model);
        cmd.Options.Add(Out);
        cmd.Options.Add(DType);
        cmd.Options.Add(Layout);
        cmd.Options.Add(Overwrite);
        cmd.SetAction(Run);
        return cmd;
    }

    private static int Run(ParseResult r)
    {
        var dtype = r.GetValue(DType)!.ToLowerInvariant() switch
        {
            "bf16" or "bfloat16" => SafetensorsDType.BF16,
            "f16" or "fp16" or "float16" => SafetensorsDType.F16,
            "f32" or "fp32" or "float32" => SafetensorsDType.F32,
            var other => throw new ArgumentException($"--dtype '{other}': expected bf16, f16 or f32."),
        };
        var source = r.GetValue(Model)!.FullName;
        var target = Path.GetFullPath(r.GetValue(Out)!.FullName);
        if (!Directory.Exists(source))
        {
            throw new DirectoryNotFoundException($"--model {source}: no such directory.");
        }

        var sourceFull = Path.TrimEndingDirectorySeparator(Path.GetFullPath(source));
        if (string.Equals(sourceFull, Path.TrimEndingDirectorySeparator(target), StringComparison.Ordinal))
        {
            throw new ArgumentException("--out must not be the --model directory.");
        }

        if (CommonOptions.IsInside(sourceFull, target))
        {
            // Replacing it would delete the model being read, and whatever else is beside it (a whole training run).
            throw new ArgumentException($"--out {target} holds --model {sourceFull}; write the export to a directory of its own.");
        }

        if (Directory.Exists(target))
        {
            if (!r.GetValue(Overwrite))
            {
                throw new IOException($"--out {target} exists; pass --overwrite to replace it.");
            }

            // --overwrite replaces a model directory written before, never a folder of other things.
            if (Directory.EnumerateFileSystemEntries(target).Any() && !File.Exists(Path.Combine(target, Mamba2Checkpoint.ConfigFile)))
            {
                throw new IOException($"--out {target} is not a model directory (no {Mamba2Checkpoint.ConfigFile}); --overwrite replaces only a checkpoint, so name a new or empty directory.");
            }
        }

        var parent = Path.GetDirectoryName(target)!;
        if (!Directory.Exists(parent))
        {
            throw new DirectoryNotFoundException($"--out {target}: the directory {parent} does not exist.");
        }

        var (config, values) = Mamba2Checkpoint.ReadValues(source);
        var layout = r.GetValue(Layout) is { } text ? CheckpointLayouts.Parse(text, "--layout") : CheckpointLayouts.For(config);
        CheckpointLayouts.Check(config, layout);   // before anything is written
        var tokenizer = HfTokenizer.FilesIn(source);
        DurableFiles.WriteDirectory(target, temp =>   // complete or absent
        {
            Mamba2Checkpoint.Write(config, values, temp, dtype, layout);
            foreach (var file in tokenizer)
            {
                File.Copy(file, Path.Combine(temp, Path.GetFileName(file)));
            }
        });
        var bytes = Directory.GetFiles(target).Where(f => f.EndsWith(".safetensors", StringComparison.Ordinal) || f.EndsWith(".bin", StringComparison.Ordinal)).Sum(f => new FileInfo(f).Length);
        Console.WriteLine($"{target}: {layout.Name()} layout, {config.NLayer} layers x d_model {config.Mixer.DModel}, vocabulary {config.VocabSize}, "
            + $"{values.Values.Sum(v => (long)v.Length) / 1e6:F1}M parameters as {Mamba2Checkpoint.TorchDtype(dtype)} ({bytes / 1048576.0:F1} MiB)"
            + (tokenizer.Count > 0 ? $", with {string.Join(", ", tokenizer.Select(Path.GetFileName))}" : ""));
        return 0;
    }
}
