using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json;
using Mamba2.Model.Checkpoints;
using Mamba2.Model.Distributed;
using Mamba2.Model.Generation;
using Mamba2.Model.IO;
using Mamba2.Model.Modules;
using Mamba2.Model.Ops;
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
    private static readonly Option<FileInfo?> Data = new("--data") { Description = "text file for --task text (byte-level, or --init-from's tokenizer)" };
    private static readonly Option<DirectoryInfo?> InitFrom = new("--init-from")
    {
        Description = "fine-tune: start --task text from this model directory (HF or mamba_ssm layout; its config, and its tokenizer.json for --data)",
    };
    private static readonly Option<FileInfo?> Config = new("--config") { Description = "JSON file of settings (snake_case keys as train.json); flags override it" };
    private static readonly Option<DirectoryInfo?> Out = new("--out") { Description = "run directory (default runs/<task>-<time>)" };
    private static readonly Option<DirectoryInfo?> Resume = new("--resume") { Description = "a checkpoint directory of a run (step-N) to continue exactly" };
    private static readonly Option<FileInfo?> MetricsOut = new("--metrics-out") { Description = "write the final evaluation as JSON (loss, accuracy)" };
    private static readonly Option<long?> Steps = new("--steps") { Description = $"optimizer steps; default {PerTask(s => s.Steps)}" };
    private static readonly Option<int?> Batch = new("--batch") { Description = $"sequences per step; default {PerTask(s => s.Batch)}" };
    private static readonly Option<int?> SeqLen = new("--seqlen") { Description = $"sequence length; default {PerTask(s => s.SeqLen)}" };
    private static readonly Option<int?> DModel = new("--d-model") { Description = $"model width; default {PerTask(s => s.DModel)}" };
    private static readonly Option<int?> Layers = new("--layers") { Description = $"Mamba2 blocks; default {PerTask(s => s.NLayer)}" };
    private static readonly Option<float?> Lr = new("--lr") { Description = $"peak learning rate (warm-up then cosine); default {PerTask(s => s.LearningRate)}" };
    private static readonly Option<bool?> Bidirectional = new("--bidirectional") { Description = "bidirectional layers (the sum-form SSD, non-causal conv)" };
    private static readonly Option<int?> Seed = new("--seed") { Description = $"initialization and data seed; default {PerTask(s => s.Seed)}" };
    private static readonly Option<int?> EvalEvery = new("--eval-every") { Description = $"steps between evaluations; default {PerTask(s => s.EvalEvery)}" };
    private static readonly Option<int?> SaveEvery = new("--save-every") { Description = $"steps between checkpoints; default {PerTask(s => s.SaveEvery)}" };
    private static readonly Option<int?> Keep = new("--keep") { Description = $"checkpoints kept; default {PerTask(s => s.Keep)}" };
    private static readonly Option<long?> StopAt = new("--stop-at") { Description = "stop (and save) at this step; the schedule still spans --steps, so --resume continues the same run" };
    private static readonly Option<bool> Overwrite = new("--overwrite") { Description = "start a new run in an --out that holds one (its checkpoints, metrics and settings are removed)" };

    /// <summary>Each task's default of a setting, for --help ("selective-copy 4000, ..."), from the same table the run uses.</summary>
    private static string PerTask(Func<TrainSettings, object> setting) =>
        string.Join(", ", new[] { "selective-copy", "associative-recall", "reverse", "text" }
            .Select(t => $"{t} {Convert.ToString(setting(TrainSettings.For(t)), CultureInfo.InvariantCulture)}"));

    /// <summary>What a run writes into its directory (--overwrite removes exactly these).</summary>
    private static readonly string[] RunFiles = ["train.json", "metrics.csv", "curves.png"];

    public static Command Create()
    {
        return CommonOptions.GpuCommand("train", "Train a Mamba2 language model (synthetic tasks or byte-level text) on the GPU, or the CPU driver without one", Run,
            Task, Data, InitFrom, Config, Out, Resume, MetricsOut, Steps, Batch, SeqLen, DModel, Layers, Lr, Bidirectional, Seed, EvalEvery, SaveEvery, Keep, StopAt, Overwrite, CommonOptions.Bf16Activations);
    }

    private static TrainSettings Settings(ParseResult r)
    {
        var resume = r.GetValue(Resume);
        TrainSettings s;
        if (resume is not null)
        {
            // What the run fixed when it started: given again, it would be ignored, so it is refused.
            var fixedByRun = new Option[] { Task, Config, Out, InitFrom, DModel, Layers, Bidirectional, Overwrite }
                .Where(o => r.GetResult(o) is { Implicit: false }).Select(o => o.Name).ToList();
            if (fixedByRun.Count > 0)
            {
                throw new ArgumentException($"{string.Join(", ", fixedByRun)}: a resumed run keeps its task, model and directory (train.json beside --resume's checkpoint); leave {(fixedByRun.Count == 1 ? "it" : "them")} out.");
            }

            CheckResume(resume.FullName);
            var saved = Path.Combine(resume.FullName, "..", "train.json");
            s = File.Exists(saved) ? TrainSettings.FromJson(saved, new TrainSettings()) : throw new FileNotFoundException($"--resume: no train.json beside {resume.FullName}.");
        }
        else
        {
            var task = r.GetValue(Task)!;
            s = TrainSettings.For(task);
            if (r.GetValue(Config) is { } config)
            {
                CommonOptions.CheckInputFile("--config", config);
                s = TrainSettings.FromJson(config.FullName, s);
            }
        }

        return s with
        {
            Data = r.GetValue(Data)?.FullName ?? s.Data,
            InitFrom = r.GetValue(InitFrom)?.FullName ?? s.InitFrom,
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

    /// <summary>--resume must name one checkpoint of a run: say which when it names the run, or a step that is not there.</summary>
    private static void CheckResume(string path)
    {
        string Steps(string run) => Directory.Exists(run)
            ? string.Join(", ", StepDirectories(run).OrderBy(x => x.Step).Select(x => Path.GetFileName(x.Dir))) is { Length: > 0 } list ? list : "none"
            : "none";
        if (File.Exists(path))
        {
            throw new ArgumentException($"--resume {path} is a file; name a checkpoint directory of a run (its step-N).");
        }

        if (File.Exists(Path.Combine(path, "train.json")))
        {
            throw new ArgumentException($"--resume {path} is a run directory; pick one of its checkpoints ({Steps(path)}), e.g. --resume {Path.Combine(path, "step-N")}.");
        }

        if (!Directory.Exists(path))
        {
            throw new ArgumentException($"--resume {path}: no such checkpoint (the run has: {Steps(Path.GetFullPath(Path.Combine(path, "..")))}).");
        }
    }

    private static IEnumerable<(string Dir, long Step)> StepDirectories(string runDir) =>
        Directory.GetDirectories(runDir, "step-*")
            .Select(d => (Dir: d, Step: long.TryParse(Path.GetFileName(d)["step-".Length..], NumberStyles.None, CultureInfo.InvariantCulture, out var n) ? n : -1))
            .Where(x => x.Step >= 0);

    /// <summary>A tokenizer's files that a fine-tuned checkpoint carries, so it is a whole model for transformers too.</summary>

    private static TrainingTask MakeTask(TrainSettings s, string? tokenizerDir) => s.Task switch
    {
        "text" when s.InitFrom is not null => FineTuningText(s, tokenizerDir!),
        "selective-copy" => new SelectiveCopyTask(s.SeqLen, s.CopyTokens, s.TaskVocab),
        "associative-recall" => new AssociativeRecallTask(pairs: RecallPairs(s.SeqLen)),
        "reverse" => new ReverseTask(s.SeqLen, s.TaskVocab),
        "text" => new TextTask(s.Data ?? throw new ArgumentException("--task text needs --data FILE."), s.SeqLen),
        _ => throw new ArgumentException($"--task must be selective-copy, associative-recall, reverse or text, got '{s.Task}'."),
    };

    /// <summary>Associative recall's pairs for a sequence: 4 positions a pair (the pairs, then each key queried again).</summary>
    private static int RecallPairs(int seqLen) =>
        seqLen % 4 == 0 && seqLen / 4 is >= 1 and <= AssociativeRecallTask.DefaultKeys
            ? seqLen / 4
            : throw new ArgumentException(
                $"--seqlen {seqLen}: associative recall takes 4 positions a key-value pair (the pairs, then each key queried again), each pair a distinct one of {AssociativeRecallTask.DefaultKeys} keys: a multiple of 4 in 4..{4 * AssociativeRecallTask.DefaultKeys}.");

    private static int Run(ParseResult r)
    {
        var s = Settings(r);
        if (s.Steps <= 0 || s.Batch <= 0 || s.SeqLen <= 1 || s.EvalEvery <= 0 || s.SaveEvery <= 0 || s.Keep <= 0)
        {
            throw new ArgumentException("--steps, --batch, --eval-every, --save-every and --keep must be positive and --seqlen at least 2.");
        }

        CommonOptions.CheckTokensAStep(s.Batch, s.SeqLen);

        if (!float.IsFinite(s.LearningRate) || s.LearningRate <= 0)
        {
            throw new ArgumentException($"--lr must be a positive number, got {s.LearningRate.ToString(CultureInfo.InvariantCulture)}.");
        }

        // The config file's other numbers, before anything is written: each refused later would leave a run directory.
        string? badSetting = s switch
        {
            { WarmupSteps: < 0 } => $"warmup_steps must be >= 0, got {s.WarmupSteps}",
            { EvalBatches: < 1 } => $"eval_batches must be >= 1, got {s.EvalBatches}",
            { ChunkSize: < 16 or > 256 } => $"chunk_size must be in 16..256 (the SSD's chunks), got {s.ChunkSize}",
            _ when !(s.WeightDecay >= 0 && float.IsFinite(s.WeightDecay)) => $"weight_decay must be finite and >= 0, got {s.WeightDecay.ToString(CultureInfo.InvariantCulture)}",
            _ when !(s.MaxGradNorm > 0 && float.IsFinite(s.MaxGradNorm)) => $"max_grad_norm must be finite and > 0, got {s.MaxGradNorm.ToString(CultureInfo.InvariantCulture)}",
            _ => null,
        };
        if (badSetting is not null)
        {
            throw new ArgumentException($"{(r.GetValue(Config) is { } config ? config.FullName : "train settings")}: {badSetting}.");
        }

        if (r.GetValue(StopAt) is <= 0)
        {
            throw new ArgumentException($"--stop-at must be a positive step, got {r.GetValue(StopAt)}.");
        }

        if (r.GetValue(StopAt) is { } stopAtStep && stopAtStep > s.Steps)
        {
            throw new ArgumentException($"--stop-at {stopAtStep} is past the run's last step ({s.Steps}, from --steps or the config): raise --steps to train longer.");
        }

        var stopAt = r.GetValue(StopAt) ?? s.Steps;
        var resume = r.GetValue(Resume);
        long? resumedStep = resume is null ? null : Trainer.StepOf(resume.FullName);
        if (resumedStep is { } done && r.GetValue(Steps) is { } steps && steps < done)
        {
            throw new ArgumentException($"--steps {steps} is before --resume's step {done}: a run continues from its checkpoint, it does not go back.");
        }

        if (resumedStep is { } resumed && r.GetValue(StopAt) is not null && stopAt <= resumed)
        {
            throw new ArgumentException($"--stop-at {stopAt} is not after --resume's step {resumed}: nothing would be trained.");
        }

        var runDir = resume is not null ? Path.GetFullPath(Path.Combine(resume.FullName, ".."))
            : r.GetValue(Out)?.FullName ?? Path.GetFullPath(Path.Combine("runs", $"{s.Task}-{DateTime.Now:yyyyMMdd-HHmmss}"));
        if (r.GetValue(MetricsOut) is { } metricsOutFile && !Directory.Exists(Path.GetDirectoryName(metricsOutFile.FullName)))
        {
            throw new DirectoryNotFoundException($"--metrics-out {metricsOutFile.FullName}: the directory does not exist.");
        }

        if (s.Task == "text" && s.Data is { } dataFile)
        {
            CommonOptions.CheckInputFile("--data", new FileInfo(dataFile));
        }

        if (s.InitFrom is not null)
        {
            if (s.Task != "text")
            {
                throw new ArgumentException($"--init-from fine-tunes on text: use --task text --data FILE (not --task {s.Task}).");
            }

            if (r.GetValue(DModel) is not null || r.GetValue(Layers) is not null || r.GetValue(Bidirectional) is not null)
            {
                throw new ArgumentException("--d-model, --layers and --bidirectional come from --init-from's config.json; leave them out.");
            }

            if (resume is null && !Directory.Exists(s.InitFrom))
            {
                throw new DirectoryNotFoundException($"--init-from {s.InitFrom}: no such directory.");
            }

            if (resume is null && r.GetValue(Overwrite) && CommonOptions.IsInside(s.InitFrom, runDir))
            {
                throw new ArgumentException($"--init-from {Path.GetFullPath(s.InitFrom)} is inside --out {runDir}, whose checkpoints --overwrite removes; fine-tune into another directory.");
            }
        }

        // A fine-tuning run's tokenizer: the resumed checkpoint's copy, else --init-from's; saved into every checkpoint.
        var tokenizerDir = resume is not null && File.Exists(Path.Combine(resume.FullName, HfTokenizer.FileName)) ? resume.FullName : s.InitFrom;
        var tokenizerFiles = tokenizerDir is null ? [] : HfTokenizer.FilesIn(tokenizerDir);
        var task = MakeTask(s, tokenizerDir);

        // Under mpirun every rank runs this with the same arguments; rank 0 alone writes and prints.
        var comm = Communicator.Launched();
        CommonOptions.QuietUnlessRoot(comm);
        CommonOptions.NoteRankCores(comm);

        if (resume is not null && s.WorldSize != comm.Size)
        {
            AnsiConsole.MarkupLine($"[yellow]note:[/] the run was trained on {s.WorldSize} rank(s), this is {comm.Size}: the global batch is the same, the sums' order is not, so the losses continue equal only to about 1e-6.");
        }

        s = s with { WorldSize = comm.Size };
        if (s.InitFrom is not null && resume is null)
        {
            // train.json says what is trained: the checkpoint's shape, not the text task's defaults.
            var c = Mamba2Checkpoint.ReadConfig(s.InitFrom);
            s = s with
            {
                DModel = c.Mixer.DModel,
                NLayer = c.NLayer,
                DState = c.Mixer.DState,
                HeadDim = c.Mixer.HeadDim,
                ChunkSize = c.Mixer.ChunkSize,
                Bidirectional = !c.Mixer.Causal,
            };
        }
        if (comm.IsRoot)
        {
            CheckRunDirectory(runDir, resume is null, r.GetValue(Overwrite));
        }

        var code = Train(r, s, comm, task, runDir, resume, stopAt, tokenizerFiles);
        if (code is 0 or CliApp.Interrupted)
        {
            // MPI_Finalize once this rank is done (it waits for the others: rank 0 may still be saving); on a failure
            // CliApp ends the whole job instead.
            comm.Dispose();
        }

        return code;
    }

    private static int Train(ParseResult r, TrainSettings s, Communicator comm, TrainingTask task, string runDir, DirectoryInfo? resume, long stopAt,
        List<string> tokenizerFiles)
    {
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

        using var device = CommonOptions.Open(r, comm.LocalRank);
        // A resumed run (or a --config) may name the run's precision: kept unless --precision says otherwise.
        var settingsFile = resume is not null ? Path.GetFullPath(Path.Combine(resume.FullName, "..", "train.json")) : r.GetValue(Config)?.FullName ?? "train settings";
        if (CommonOptions.ResolvePrecision(r, device, s.Precision is { } recorded ? (recorded, settingsFile) : null) is not { } precision
            || CommonOptions.ResolveBf16Activations(r, precision, s.Bf16Activations) is not { } bf16Activations)
        {
            return 2;
        }

        s = s with { Precision = precision.Name(), Bf16Activations = bf16Activations };

        var mixer = new Mamba2Config(s.DModel) { DState = s.DState, HeadDim = s.HeadDim, ChunkSize = s.ChunkSize, Causal = !s.Bidirectional };
        using var trainer = resume is not null ? Trainer.Resume(device, resume.FullName, task, options, comm, precision)
            : s.InitFrom is not null ? new Trainer(Mamba2Checkpoint.Load(device, s.InitFrom), task, options, comm)
            : new Trainer(Mamba2LM.Initialize(device, new Mamba2LMConfig(task.VocabSize, s.NLayer, mixer), new Random(s.Seed)), task, options, comm);
        trainer.Model.Precision = precision;
        trainer.Model.StoreActivationsAsBf16 = bf16Activations;
        if (comm.IsRoot)
        {
            // Only now, with the device, precision and model accepted: a refused run leaves the directory as it was.
            PrepareRunDirectory(runDir, resume is null ? null : Trainer.StepOf(resume.FullName), r.GetValue(Overwrite));
            DurableFiles.WriteAllText(Path.Combine(runDir, "train.json"), s.ToJson());
        }

        if (task.NeedsBidirectional && !s.Bidirectional)
        {
            AnsiConsole.MarkupLine("[yellow]note:[/] reversal needs the future; a causal model cannot solve it (try --bidirectional).");
        }

        using var metrics = comm.IsRoot ? new MetricsLog(Path.Combine(runDir, "metrics.csv"), resume is null ? null : trainer.Step) : null;
        var interrupted = false;
        ConsoleCancelEventHandler onCancel = (_, e) =>
        {
            e.Cancel = true;   // finish the step, save, then stop
            interrupted = true;
        };
        Console.CancelKeyPress += onCancel;
        // A scheduler's stop (SIGTERM, then SIGKILL after a grace period: Slurm's preemption, Kubernetes) saves as Ctrl-C
        // does. Not under mpirun, which sends SIGTERM to end the ranks at once when one fails (MpiCommunicator).
        var underMpirun = Communicator.Joined is not null;   // even as its only rank
        void Interrupt(PosixSignalContext c)
        {
            c.Cancel = true;   // finish the step, save, then stop
            interrupted = true;
        }

        using var onTerm = !underMpirun ? PosixSignalRegistration.Create(PosixSignal.SIGTERM, Interrupt) : null;
        // Under mpirun, Ctrl-C makes mpirun end the ranks at once; SIGUSR1 (which it forwards) is the way to stop and save.
        // A rank may start with it blocked (SignalMask): unblocked on this thread, where the process then takes it.
        using var onUsr1 = underMpirun ? PosixSignalRegistration.Create(SigUsr1, Interrupt) : null;
        if (underMpirun)
        {
            SignalMask.Open(SignalMask.Usr1);
        }

        // A STOP file in the run directory stops the run as a signal does, whatever started it (an mpirun that does not
        // forward SIGUSR1, a detached job): rank 0 looks for it after each step, and all ranks agree (AnyRank).
        var stopFile = Path.Combine(runDir, StopFileName);
        bool Stopping() => interrupted || (comm.IsRoot && File.Exists(stopFile));
        StepMetrics? eval = null;
        string? diverged = null;   // why the run stopped early with non-finite numbers
        try
        {
            var shape = trainer.Model.Config;   // the checkpoint's when resuming or fine-tuning
            var ranks = comm.Size > 1 ? $" x {comm.Size} ranks (data parallel, {s.Batch / comm.Size}-{(s.Batch + comm.Size - 1) / comm.Size} rows each)" : "";
            AnsiConsole.MarkupLine($"[grey]{device.Name}{ranks}; {s.Task}, {(shape.Mixer.Causal ? "causal" : "bidirectional")} d_model {shape.Mixer.DModel} x {shape.NLayer} layers, vocabulary {shape.VocabSize}, batch {s.Batch} x {s.SeqLen}; run directory {runDir.EscapeMarkup()}[/]");
            var clock = Stopwatch.StartNew();
            var startStep = trainer.Step;
            AnsiConsole.Progress()
                .Columns(new TaskDescriptionColumn(), new ProgressBarColumn(), new PercentageColumn(), new RemainingTimeColumn())
                .Start(ctx =>
                {
                    var bar = ctx.AddTask("training", maxValue: stopAt);
                    bar.Value = trainer.Step;
                    while (trainer.Step < stopAt && !AnyRank(comm, Stopping()))
                    {
                        var m = trainer.TrainStep();
                        // The same on every rank (the loss is summed over them): all stop here, nothing saved.
                        diverged = NonFinite(m.Step, "training loss", m.Loss);
                        if (diverged is not null)
                        {
                            break;
                        }

                        var tokensPerSecond = (m.Step - startStep) * (double)s.Batch * s.SeqLen / Math.Max(clock.Elapsed.TotalSeconds, 1e-9);
                        metrics?.Add("train", m, tokensPerSecond, clock.Elapsed.TotalSeconds);
                        // A checkpoint comes with its evaluation, which also shows the weights it would hold still work.
                        var save = m.Step % s.SaveEvery == 0 || m.Step == stopAt;
                        if (m.Step % s.EvalEvery == 0 || save)
                        {
                            eval = trainer.Evaluate();
                            metrics?.Add("eval", eval, tokensPerSecond, clock.Elapsed.TotalSeconds);
                            diverged = NonFinite(m.Step, "evaluation loss after its update", eval.Loss);   // the weights a save would hold
                            if (diverged is not null)
                            {
                                break;
                            }
                        }

                        if (save)
                        {
                            diverged = SaveUnlessDiverged(trainer, comm, runDir, s.Keep, tokenizerFiles);
                            if (diverged is not null)
                            {
                                break;
                            }
                        }

                        var score = s.Task == "text" ? $"ppl {Math.Exp(m.Loss):F2}" : $"acc {m.Accuracy:P1}";
                        var evalText = eval is null ? "" : s.Task == "text" ? $" | eval ppl {Math.Exp(eval.Loss):F2}" : $" | eval acc {eval.Accuracy:P1}";
                        bar.Description = $"step {m.Step} loss {m.Loss:F4} {score}{evalText} | {tokensPerSecond:F0} tok/s";
                        bar.Value = m.Step;
                    }
                });
            interrupted = diverged is null && AnyRank(comm, Stopping());
            if (interrupted && trainer.Step % s.SaveEvery != 0)
            {
                diverged = SaveUnlessDiverged(trainer, comm, runDir, s.Keep, tokenizerFiles);
                if (diverged is null)
                {
                    AnsiConsole.MarkupLine($"[yellow]interrupted at step {trainer.Step}: saved; continue with --resume {Path.Combine(runDir, $"step-{trainer.Step}").EscapeMarkup()}[/]");
                }
            }

            if (interrupted && comm.IsRoot && File.Exists(stopFile))
            {
                File.Delete(stopFile);   // so that the resumed run goes on
                AnsiConsole.MarkupLine($"[grey]stopped by {stopFile.EscapeMarkup()} (removed)[/]");
            }

            if (diverged is not null)
            {
                if (metrics is not null)
                {
                    Plots.Curves(metrics.Rows, Path.Combine(runDir, "curves.png"), s.Task == "text");
                    var last = StepDirectories(runDir).OrderByDescending(x => x.Step).Select(x => x.Dir).FirstOrDefault();
                    Console.Error.WriteLine($"error: {diverged}; stopped. {(last is null ? "No checkpoint was saved." : $"The newest checkpoint is {last}.")}");
                }

                return CliApp.TrainingDiverged;
            }

            eval ??= trainer.Evaluate();
            if (metrics is null)
            {
                return interrupted ? CliApp.Interrupted : 0;   // not rank 0: nothing to write
            }

            Plots.Curves(metrics.Rows, Path.Combine(runDir, "curves.png"), s.Task == "text");
            if (comm.Size > 1 && trainer.Step > startStep)
            {
                var steps = trainer.Step - startStep;
                AnsiConsole.MarkupLine($"[grey]{comm.Size} ranks: the gradient sums took {trainer.GradientSumSeconds * 1e3 / steps:F1} ms a step on rank 0, overlapped with the backward; the steps waited {trainer.GradientWaitSeconds * 1e3 / steps:F1} ms for them ({trainer.GradientWaitSeconds / clock.Elapsed.TotalSeconds:P1} of the run's time); sums through {(trainer.GradientSumPath ?? "nothing yet").EscapeMarkup()}[/]");
            }

            AnsiConsole.MarkupLine($"final evaluation after {trainer.Step} steps: loss {eval.Loss:F4}{(s.Task == "text" ? $", perplexity {Math.Exp(eval.Loss):F2}" : $", accuracy {eval.Accuracy:P2}")}; {clock.Elapsed.TotalSeconds:F0} s");
            if (r.GetValue(MetricsOut) is { } metricsOut)
            {
                var result = new Dictionary<string, object> { ["loss"] = eval.Loss, ["steps"] = trainer.Step, ["seconds"] = clock.Elapsed.TotalSeconds };
                if (s.Task != "text")
                {
                    result["accuracy"] = eval.Accuracy;
                }

                DurableFiles.WriteAllText(metricsOut.FullName, JsonSerializer.Serialize(result, new JsonSerializerOptions { WriteIndented = true }));
            }

            return interrupted ? CliApp.Interrupted : 0;
        }
        finally
        {
            Console.CancelKeyPress -= onCancel;
        }
    }

    /// <summary>The file in the run directory whose appearance stops the run after its step, saved (any launcher).</summary>
    private const string StopFileName = "STOP";

    private const PosixSignal SigUsr1 = (PosixSignal)SignalMask.Usr1;

    /// <summary>Whether any rank was interrupted (each sees mpirun's forwarded SIGUSR1 at its own step): all stop after the same one.</summary>
    private static bool AnyRank(Communicator comm, bool interrupted)
    {
        if (comm.Size == 1)
        {
            return interrupted;
        }

        double[] flag = [interrupted ? 1 : 0];
        comm.SumInPlace(flag);
        return flag[0] > 0;
    }

    /// <summary>--data through the model's tokenizer (<see cref="CommonOptions.ModelTokenizer"/>), for its vocabulary.</summary>
    private static TextTask FineTuningText(TrainSettings s, string tokenizerDir)
    {
        var data = s.Data ?? throw new ArgumentException("--task text needs --data FILE.");
        using var tokenizer = CommonOptions.ModelTokenizer(tokenizerDir);

        return TextTask.Tokenized(data, tokenizer, Mamba2Checkpoint.ReadConfig(tokenizerDir).VocabSize, s.SeqLen);   // the resumed step's or --init-from's
    }

    /// <summary>Why the run stops, where <paramref name="loss"/> is NaN or infinite; else null.</summary>
    private static string? NonFinite(long step, string which, double loss) => double.IsFinite(loss) ? null
        : $"step {step}: the {which} is {loss.ToString(CultureInfo.InvariantCulture)}: the run diverged (a lower learning rate may help)";

    /// <summary>
    /// Saves (rank 0) unless the weights or moments are no longer finite; then returns why, on every rank, and the
    /// checkpoints on disk stay as they were.
    /// </summary>
    private static string? SaveUnlessDiverged(Trainer trainer, Communicator comm, string runDir, int keep, IEnumerable<string> alongside)
    {
        string? why = null;
        if (comm.IsRoot)
        {
            try
            {
                SaveCheckpoint(trainer, runDir, keep, alongside);
            }
            catch (TrainingDivergedException e)
            {
                why = e.Message.TrimEnd('.');
            }
        }

        return AnyRank(comm, why is not null) ? why ?? $"step {trainer.Step}: rank 0 found non-finite weights" : null;
    }

    /// <summary>runDir/step-N (atomic and durable, via the trainer), then all but the newest <paramref name="keep"/> step directories removed.</summary>
    private static void SaveCheckpoint(Trainer trainer, string runDir, int keep, IEnumerable<string> alongside)
    {
        trainer.Save(Path.Combine(runDir, $"step-{trainer.Step}"), alongside);
        foreach (var (dir, _) in StepDirectories(runDir).OrderByDescending(x => x.Step).Skip(keep))
        {
            Directory.Delete(dir, recursive: true);
        }
    }

    /// <summary>
    /// Whether a run may write to <paramref name="runDir"/>, changing nothing: not a file, and for a new run without
    /// <paramref name="overwrite"/>, holding no run. Checked before the device is opened, so a mistaken --out fails at once.
    /// </summary>
    private static void CheckRunDirectory(string runDir, bool newRun, bool overwrite)
    {
        if (File.Exists(runDir))
        {
            throw new IOException($"--out {runDir} is a file, not a directory.");
        }

        if (!newRun || overwrite || !Directory.Exists(runDir))
        {
            return;
        }

        var steps = StepDirectories(runDir).Count();
        if (steps > 0 || RunFiles.Any(f => File.Exists(Path.Combine(runDir, f))))
        {
            throw new ArgumentException($"--out {runDir} already holds a run ({steps} checkpoint(s)); continue it with --resume {Path.Combine(runDir, "step-N")}, or start over with --overwrite.");
        }
    }

    /// <summary>
    /// The run directory before a run writes to it: interrupted saves' leftovers removed; a new run refuses a
    /// directory that holds one unless <paramref name="overwrite"/> (which removes the run's own files only); a run
    /// resumed at <paramref name="resumeStep"/> moves the later checkpoints of the run it abandons (and a copy of
    /// its metrics) into abandoned-TIME/, so that pruning keeps the continued run's newest checkpoints.
    /// </summary>
    private static void PrepareRunDirectory(string runDir, long? resumeStep, bool overwrite)
    {
        CheckRunDirectory(runDir, resumeStep is null, overwrite);
        Directory.CreateDirectory(runDir);
        if (Trainer.CleanInterruptedSaves(runDir) is > 0 and var cleaned)
        {
            AnsiConsole.MarkupLine($"[grey]removed {cleaned} folder(s) left by interrupted checkpoint saves[/]");
        }

        var stopFile = Path.Combine(runDir, StopFileName);
        if (File.Exists(stopFile))
        {
            File.Delete(stopFile);
            AnsiConsole.MarkupLine($"[grey]removed a {StopFileName} file left in the run directory (it would stop this run after its first step)[/]");
        }

        var steps = StepDirectories(runDir).ToList();
        if (resumeStep is not { } k)
        {
            if (overwrite)
            {
                steps.ForEach(x => Directory.Delete(x.Dir, recursive: true));
                foreach (var f in RunFiles.Select(f => Path.Combine(runDir, f)).Where(File.Exists))
                {
                    File.Delete(f);
                }
            }

            return;
        }

        var later = steps.Where(x => x.Step > k).ToList();
        if (later.Count == 0)
        {
            return;
        }

        var aside = Path.Combine(runDir, $"abandoned-{DateTime.Now:yyyyMMdd-HHmmss}");
        Directory.CreateDirectory(aside);
        foreach (var (dir, _) in later)
        {
            Directory.Move(dir, Path.Combine(aside, Path.GetFileName(dir)));
        }

        var metricsFile = Path.Combine(runDir, "metrics.csv");
        if (File.Exists(metricsFile))
        {
            File.Copy(metricsFile, Path.Combine(aside, "metrics.csv"));
        }

        DurableFiles.SyncDirectory(aside);
        DurableFiles.SyncDirectory(runDir);
        AnsiConsole.MarkupLine($"[yellow]resuming at step {k}: the abandoned run's later checkpoints ({string.Join(", ", later.Select(x => x.Step))}) moved to {aside.EscapeMarkup()}[/]");
    }
}
