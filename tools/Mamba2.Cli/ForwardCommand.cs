using System.CommandLine;
using Mamba2.Model.Checkpoints;
using Mamba2.Model.IO;
using Mamba2.Model.Modules;
using Mamba2.Model.Ops;
using Mamba2.Model.Tensors;

namespace Mamba2.Cli;

/// <summary>
/// <c>mamba2 forward</c>: logits of a checkpoint on input_ids from a safetensors file; with --backward also the
/// next-token loss (HF convention) and grad.&lt;parameter&gt; for every parameter.
/// </summary>
internal static class ForwardCommand
{
    private static readonly Option<DirectoryInfo> Model = new("--model") { Required = true, Description = "checkpoint directory (config.json + model.safetensors, HF or mamba_ssm layout)" };
    private static readonly Option<FileInfo> Input = new("--input") { Required = true, Description = "safetensors with input_ids (I64 or I32, shape (b, L))" };
    private static readonly Option<FileInfo> Output = new("--output") { Required = true, Description = "safetensors to write logits (b, L, vocab) to; with --backward also loss and grad.<name>" };
    private static readonly Option<bool> Backward = new("--backward") { Description = "Also the mean next-token cross-entropy (logits[:, :-1] vs input_ids[:, 1:]) and every parameter's gradient" };

    public static Command Create()
    {
        return CommonOptions.GpuCommand("forward", "Run a Mamba2 language model on input_ids (and optionally its backward)", Run,
            Model, Input, Output, Backward);
    }

    private static int Run(ParseResult r)
    {
        var input = r.GetValue(Input)!;
        var output = r.GetValue(Output)!;
        CommonOptions.CheckInputFile("--input", input);
        CommonOptions.CheckOutputFile("--output", output, input);
        int[] ids;
        int[] shape;
        using (var file = SafetensorsFile.Open(input.FullName))
        {
            if (!file.Contains("input_ids"))
            {
                throw new KeyNotFoundException($"{input.Name} has no input_ids; it holds: {string.Join(", ", file.Names)}.");
            }

            var info = file.Info("input_ids");
            if (info.DType is not (SafetensorsDType.I64 or SafetensorsDType.I32) || info.Shape.Length != 2)
            {
                throw new InvalidDataException($"input_ids must be I64 or I32 of shape (b, L), got {info.DType.HeaderName()} {ShapeOps.Format(info.Shape)}.");
            }

            var t = file.Read("input_ids");
            shape = t.Shape;
            ids = [.. t.ToInt64().Select(v => v is < int.MinValue or > int.MaxValue ? throw new InvalidDataException($"input_ids value {v} does not fit int32.") : (int)v)];
        }

        using var device = CommonOptions.Open(r);
        if (CommonOptions.ResolvePrecision(r, device) is not { } precision)
        {
            return 2;
        }

        using var lm = Mamba2Checkpoint.Load(device, r.GetValue(Model)!.FullName);
        lm.Precision = precision;
        using var inputIds = IndexTensor.FromArray(device, "input_ids", ids, shape);
        using var acts = lm.Forward(inputIds);
        var written = new List<HostTensor> { HostTensor.FromFloat32("logits", acts.Logits.ToArray(), [.. acts.Logits.Shape]) };
        if (r.GetValue(Backward))
        {
            using var targets = Mamba2LM.NextTokenTargets(inputIds);
            using var ce = CrossEntropy.Forward(acts.Logits, targets);
            var grads = lm.BackwardFromLoss(ce, acts, targets);
            try
            {
                written.Add(HostTensor.FromFloat32("loss", ce.Loss.ToArray(), []));
                written.AddRange(lm.Parameters.Select(q => HostTensor.FromFloat32("grad." + q.Name, grads[q.Name].ToArray(), [.. q.Value.Shape])));
            }
            finally
            {
                foreach (var g in grads.Values)
                {
                    g.Dispose();
                }
            }
        }

        SafetensorsWriter.Write(output.FullName, written);
        Console.WriteLine($"wrote {string.Join(", ", written.Take(2).Select(t => $"{t.Name} {ShapeOps.Format(t.Shape)}"))}{(written.Count > 2 ? $" and {written.Count - 2} gradients" : "")} to {output.FullName} ({device.Name})");
        return 0;
    }
}
