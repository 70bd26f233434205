using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using Mamba2.Model.Modules;
using Mamba2.Model.Training;
using Mamba2.Model.Training.Tasks;
using Spectre.Console;

namespace Mamba2.Cli;

/// <summary>
/// <c>mamba2 train</c>: trains a Mamba2 LM on a synthetic capability task or a text file, with a progress bar,
/// periodic evaluation, atomic checkpoints (last K kept, optimizer state included), exact resume, Ctrl-C saving,
/// a metrics CSV and a loss/accuracy plot in the run directory.
/// </summary>
internal static class TrainCommand
{
    private static readonly Option<string> Task = new("--task") { DefaultValueFactory = _ => "selective-copy", Description = "selective-copy, associative-recall, reverse or text" };
    private static readonly Option<FileInfo?> Data = new("--data") { Description = "text file for --task text (byte-level)" };
    private static readonly Option<FileInfo?> Config = new("--config") { Description = "JSON file of settings (snake_case keys as train.json); flags override it" };
    private static readonly Option<DirectoryInfo?> Out = new("--out") { Description = "run directory (default runs/<task>-<time>)" };
    private static readonly Option<DirectoryInfo?> Resume = new("--resume") { Description = "a checkpoint directory of a run (step-N) to continue exactly" };
    private static readonly Option<FileInfo?> MetricsOut = new("--metrics-out") { Description = "write the final evaluation as JSON (loss, accuracy)" };
    private static readonly Option<long?> Steps = new("--steps") { Description = "optimizer steps" };
    private static readonly Option<int?> Batch = new("--batch") { Description = "sequences per step" };
    private static readonly Option<int?> SeqLen = new("--seqlen") { Description = "sequence length" };
    private static readonly Option<int?> DModel = new("--d-model") { Description = "model width" };
    private static readonly Option<int?> Layers = new("--layers") { Description = "Mamba2 blocks" };
    private static readonly Option<float?> Lr = new("--lr") { Description = "peak learning rate (warm-up then cosine)" };
    private static readonly Option<bool?> Bidirectional = new("--bidirectional") { Description = "bidirectional layers (the sum-form SSD, non-causal conv)" };
    private static readonly Option<int?> Seed = new("--seed") { Description = "initialization and data seed" };
    private static readonly Option<int?> EvalEvery = new("--eval-every") { Description = "steps between evaluations" };
    private static readonly Option<int?> SaveEvery = new("--save-every") { Description = "steps between checkpoints" };
    private static readonly Option<int?> Keep = new("--keep") { Description = "checkpoints kept" };
    private static readonly Option<long?> StopAt = new("--stop-at") { Description = "stop (and save) at this step; the schedule still spans --steps, so --resume continues the same run" };

    public static Command Create()
    {
        return CommonOptions.GpuCommand("train", "Train a Mamba2 language model (synthetic tasks or byte-level text) on the GPU, or the CPU driver without one", Run,
            Task, Data, Config, Out, Resume, MetricsOut, Steps, Batch, SeqLen, DModel, Layers, Lr, Bidirectional, Seed, EvalEvery, SaveEvery, Keep, StopAt);
    }

    private static TrainSettings Settings(ParseResult r)
    {
        var resume = r.GetValue(Resume);
        TrainSettings s;
        if (resume is not null)
        {
            var saved = Path.Combine(resume.FullName, "..", "train.json");
            s = File.Exists(saved) ? TrainSettings.FromJson(saved, new TrainSettings()) : throw new FileNotFoundException($"--resume: no train.json beside {resume.FullName}.");
        }
        else
        {
            var task = r.GetValue(Task)!;
            s = TrainSettings.For(task);
            if (r.GetValue(Config) is { } config)
            {
                s = TrainSettings.FromJson(config.FullName, s);
            }
        }

        return s with
        {
            Data = r.GetValue(Data)?.FullName ?? s.Data,
            Steps = r.GetValue(Steps) ?? s.Steps,
            Batch = r.GetValue(Batch) ?? s.Batch,
            SeqLen = r.GetValue(SeqLen) ?? s.SeqLen,
            DModel = r.GetValue(DModel) ?? s.DModel,
            NLayer = r.GetValue(Layers) ?? s.NLayer,
            LearningRate = r.GetValue(Lr) ?? s.LearningRate,
            Bidirectional = r.GetValue(Bidirectional) ?? s.Bidirectional,
            Seed = r.GetValue(Seed) ?? s.Seed,
            EvalEvery = r.GetValue(EvalEvery) ?? s.EvalEvery,
            SaveEvery = r.GetValue(SaveEvery) ?? s.SaveEvery,
            Keep = r.GetValue(Keep) ?? s.Keep,
        };
    }

    private static TrainingTask MakeTask(TrainSettings s) => s.Task switch
    {
        "selective-copy" => new SelectiveCopyTask(s.SeqLen, s.CopyTokens, s.TaskVocab),
        "associative-recall" => new AssociativeRecallTask(pairs: s.SeqLen / 4),
        "reverse" => new ReverseTask(s.SeqLen, s.TaskVocab),
        "text" => new TextTask(s.Data ?? throw new ArgumentException("--task text needs --data FILE."), s.SeqLen),
        _ => throw new ArgumentException($"--task must be selective-copy, associative-recall, reverse or text, got '{s.Task}'."),
    };

    private static int Run(ParseResult r)
    {
        var s = Settings(r);
        if (s.Steps <= 0 || s.Batch <= 0 || s.SeqLen <= 1 || s.EvalEvery <= 0 || s.SaveEvery <= 0 || s.Keep <= 0)
        {
            throw new ArgumentException("--steps, --batch, --eval-every, --save-every and --keep must be positive and --seqlen at least 2.");
        }

        var stopAt = Math.Min(r.GetValue(StopAt) ?? s.Steps, s.Steps);
        var task = MakeTask(s);
        var resume = r.GetValue(Resume);
        var runDir = resume is not null ? Path.GetFullPath(Path.Combine(resume.FullName, ".."))
            : r.GetValue(Out)?.FullName ?? Path.GetFullPath(Path.Combine("runs", $"{s.Task}-{DateTime.Now:yyyyMMdd-HHmmss}"));
        Directory.CreateDirectory(runDir);
        File.WriteAllText(Path.Combine(runDir, "train.json"), s.ToJson());
        var options = new TrainerOptions
        {
            Batch = s.Batch,
            Steps = s.Steps,
            LearningRate = s.LearningRate,
            WarmupSteps = s.WarmupSteps,
            WeightDecay = s.WeightDecay,
            MaxGradNorm = s.MaxGradNorm,
            Seed = s.Seed,
            EvalBatches = s.EvalBatches,
        };

        using var device = CommonOptions.Open(r);
        if (CommonOptions.ResolvePrecision(r, device, "train", CommonOptions.AllPrecisions) is not { } precision)
        {
            return 2;
        }

        var mixer = new Mamba2Config(s.DModel) { DState = s.DState, HeadDim = s.HeadDim, ChunkSize = s.ChunkSize, Causal = !s.Bidirectional };
        using var trainer = resume is not null ? Trainer.Resume(device, resume.FullName, task, options)
            : new Trainer(Mamba2LM.Initialize(device, new Mamba2LMConfig(task.VocabSize, s.NLayer, mixer), new Random(s.Seed)), task, options);
        trainer.Model.Precision = precision;
        if (task.NeedsBidirectional && !s.Bidirectional)
        {
            AnsiConsole.MarkupLine("[yellow]note:[/] reversal needs the future; a causal model cannot solve it (try --bidirectional).");
        }

        var metrics = new MetricsLog(Path.Combine(runDir, "metrics.csv"), append: resume is not null);
        var interrupted = false;
        ConsoleCancelEventHandler onCancel = (_, e) =>
        {
            e.Cancel = true;   // finish the step, save, then stop
            interrupted = true;
        };
        Console.CancelKeyPress += onCancel;
        StepMetrics? eval = null;
        try
        {
            AnsiConsole.MarkupLine($"[grey]{device.Name}; {s.Task}, {(s.Bidirectional ? "bidirectional" : "causal")} d_model {s.DModel} x {s.NLayer} layers, batch {s.Batch} x {s.SeqLen}; run directory {runDir.EscapeMarkup()}[/]");
            var clock = Stopwatch.StartNew();
            var startStep = trainer.Step;
            AnsiConsole.Progress()
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
                .Start(ctx =>
                {
                    var bar = ctx.AddTask("training", maxValue: stopAt);
                    bar.Value = trainer.Step;
                    while (trainer.Step < stopAt && !interrupted)
                    {
                        var m = trainer.TrainStep();
                        var tokensPerSecond = (m.Step - startStep) * (double)s.Batch * s.SeqLen / Math.Max(clock.Elapsed.TotalSeconds, 1e-9);
                        metrics.Add("train", m, tokensPerSecond, clock.Elapsed.TotalSeconds);
                        if (m.Step % s.EvalEvery == 0 || m.Step == stopAt)
                        {
                            eval = trainer.Evaluate();
                            metrics.Add("eval", eval, tokensPerSecond, clock.Elapsed.TotalSeconds);
                        }

                        if (m.Step % s.SaveEvery == 0 || m.Step == stopAt)
                        {
                            SaveCheckpoint(trainer, runDir, s.Keep);
                        }

                        var score = s.Task == "text" ? $"ppl {Math.Exp(m.Loss):F2}" : $"acc {m.Accuracy:P1}";
                        var evalText = eval is null ? "" : s.Task == "text" ? $" | eval ppl {Math.Exp(eval.Loss):F2}" : $" | eval acc {eval.Accuracy:P1}";
                        bar.Description = $"step {m.Step} loss {m.Loss:F4} {score}{evalText} | {tokensPerSecond:F0} tok/s";
                        bar.Value = m.Step;
                    }
                });
            if (interrupted && trainer.Step % s.SaveEvery != 0)
            {
                SaveCheckpoint(trainer, runDir, s.Keep);
                AnsiConsole.MarkupLine($"[yellow]interrupted at step {trainer.Step}: saved; continue with --resume {Path.Combine(runDir, $"step-{trainer.Step}").EscapeMarkup()}[/]");
            }

            eval ??= trainer.Evaluate();
            Plots.Curves(metrics.Rows, Path.Combine(runDir, "curves.png"), s.Task == "text");
            AnsiConsole.MarkupLine($"final evaluation after {trainer.Step} steps: loss {eval.Loss:F4}{(s.Task == "text" ? $", perplexity {Math.Exp(eval.Loss):F2}" : $", accuracy {eval.Accuracy:P2}")}; {clock.Elapsed.TotalSeconds:F0} s");
            if (r.GetValue(MetricsOut) is { } metricsOut)
            {
                var result = new Dictionary<string, object> { ["loss"] = eval.Loss, ["steps"] = trainer.Step, ["seconds"] = clock.Elapsed.TotalSeconds };
                if (s.Task != "text")
                {
                    result["accuracy"] = eval.Accuracy;
                }

                File.WriteAllText(metricsOut.FullName, JsonSerializer.Serialize(result, new JsonSerializerOptions { WriteIndented = true }));
            }

            return 0;
        }
        finally
        {
            Console.CancelKeyPress -= onCancel;
            metrics.Dispose();
        }
    }

    /// <summary>runDir/step-N (atomic, via the trainer), then all but the newest <paramref name="keep"/> step directories removed.</summary>
    private static void SaveCheckpoint(Trainer trainer, string runDir, int keep)
    {
        trainer.Save(Path.Combine(runDir, $"step-{trainer.Step}"));
        var old = Directory.GetDirectories(runDir, "step-*")
            .Select(d => (Dir: d, Step: long.TryParse(Path.GetFileName(d)["step-".Length..], NumberStyles.Integer, CultureInfo.InvariantCulture, out var n) ? n : -1))
            .Where(x => x.Step >= 0).OrderByDescending(x => x.Step).Skip(keep);
        foreach (var (dir, _) in old)
        {
            Directory.Delete(dir, recursive: true);
        }
    }
}
