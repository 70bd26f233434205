using System.CommandLine;
using Mamba2.Model.Distributed;
using Mamba2.Model.Modules;
using Mamba2.Model.Ops;
using Mamba2.Model.Tensors;
using Mamba2.Model.Training;
using Mamba2.Vulkan;
using Spectre.Console;

namespace Mamba2.Cli;

/// <summary>
/// <c>mamba2 bench train</c>: one training step of a Mamba2 LM (forward, cross-entropy, backward, gradient clipping,
/// AdamW) timed with GPU timestamps, tokens/s, and where the time goes (one more step with profiling marks).
/// Defaults: the issue's 24-layer d_model 768 model (mamba2-130m's shape) at batch 8 x 2048. Under mpirun, the
/// data-parallel step instead: per rank and aggregate tokens/s and the scaling efficiency (<see cref="TrainScalingBench"/>).
/// </summary>
internal static class TrainStepBenchCommand
{
    private static readonly Option<int> Layers = new("--layers") { DefaultValueFactory = _ => 24, Description = "Mamba2 blocks" };
    private static readonly Option<int> DModel = new("--d-model") { DefaultValueFactory = _ => 768, Description = "model width" };
    private static readonly Option<int> Vocab = new("--vocab") { DefaultValueFactory = _ => 50280, Description = "vocabulary (tied head)" };
    private static readonly Option<int> Batch = new("--batch") { DefaultValueFactory = _ => 8, Description = "b" };
    private static readonly Option<int> SeqLen = new("--seqlen") { DefaultValueFactory = _ => 2048, Description = "L" };
    private static readonly Option<int> DState = new("--dstate") { DefaultValueFactory = _ => 128, Description = "d_state" };
    private static readonly Option<int> HeadDim = new("--headdim") { DefaultValueFactory = _ => 64, Description = "headdim" };
    private static readonly Option<int> Chunk = new("--chunk") { DefaultValueFactory = _ => 256, Description = "chunk size" };
    private static readonly Option<bool> Bidirectional = new("--bidirectional") { Description = "bidirectional layers (sum-form SSD, non-causal conv)" };
    private static readonly Option<int> Warmup = new("--warmup") { DefaultValueFactory = _ => 2, Description = "untimed steps first (at least one is run)" };
    private static readonly Option<int> Repeats = new("--repeats") { DefaultValueFactory = _ => 5, Description = "timed steps (median reported)" };
    private static readonly Option<int?> HeadBlockMib = new("--head-block-mib")
    {
        Description = "the most MiB of logits the LM head and loss form at a time (a block of rows); default 1/64 of the device's memory, within 64-2048",
    };

    private static readonly Option<FileInfo?> TimelineFile = new("--timeline")
    {
        Description = "write the Trainer-way step's submissions as CSV: label, device begin and end, host begin and launch (ms)",
    };

    private static readonly Option<int> KernelRows = new("--kernels")
    {
        DefaultValueFactory = _ => 0,
        Description = "also time every command of one more step (a barrier and a timestamp after each) and list the N kernels that took longest, by section",
    };

    public static Command Create() => CommonOptions.GpuCommand("train", "One LM training step (forward, loss, backward, AdamW): time, tokens/s, memory, and the split by section", Run,
        Layers, DModel, Vocab, Batch, SeqLen, DState, HeadDim, Chunk, Bidirectional, Warmup, Repeats, HeadBlockMib, TimelineFile, KernelRows, CommonOptions.Bf16Activations);

    private static int Run(ParseResult r)
    {
        int b = r.GetValue(Batch), l = r.GetValue(SeqLen), vocab = r.GetValue(Vocab);
        if (b < 1 || l < 2)
        {
            throw new ArgumentException($"--batch must be positive and --seqlen at least 2 (a next token to predict), got {b} and {l}.");
        }

        CommonOptions.CheckTokensAStep(b, l);
        CommonOptions.CheckRuns(r.GetValue(Warmup), r.GetValue(Repeats));
        if (r.GetValue(KernelRows) < 0)
        {
            throw new ArgumentException($"--kernels must be 0 (none) or a number of rows, got {r.GetValue(KernelRows)}.");
        }

        var timelineFile = r.GetValue(TimelineFile);
        if (timelineFile is not null)
        {
            CommonOptions.CheckOutputFile("--timeline", timelineFile);   // written at the end of the run
        }

        var mixer = new Mamba2Config(r.GetValue(DModel))
        {
            DState = r.GetValue(DState),
            HeadDim = r.GetValue(HeadDim),
            ChunkSize = r.GetValue(Chunk),
            Causal = !r.GetValue(Bidirectional),
        };
        var config = new Mamba2LMConfig(vocab, r.GetValue(Layers), mixer);
        var comm = Communicator.Launched();   // under mpirun: the data-parallel step (TrainScalingBench)
        CommonOptions.QuietUnlessRoot(comm);
        CommonOptions.NoteRankCores(comm);
        if (comm.Size > 1 && r.GetValue(KernelRows) > 0)
        {
            Console.Error.WriteLine("error: --kernels profiles one process's step; run bench train without mpirun for it.");
            return 2;
        }


        using var device = CommonOptions.Open(r, comm.LocalRank);
        if (CommonOptions.ResolvePrecision(r, device) is not { } precision)
        {
            return 2;
        }

        if (CommonOptions.ResolveBf16Activations(r, precision) is not { } bf16Activations)
        {
            return 2;
        }

        if (r.GetValue(HeadBlockMib) is < 1)
        {
            Console.Error.WriteLine("error: --head-block-mib must be at least 1.");
            return 2;
        }

        var headBlock = r.GetValue(HeadBlockMib) is { } mib ? (long)mib << 20 : LinearCrossEntropy.DefaultBlockBytes(device);
        var rng = comm.Size > 1 ? new Random(0) : new Random();   // ranks start from equal weights
        using var model = Mamba2LM.Initialize(device, config, rng);
        model.Precision = precision;
        model.StoreActivationsAsBf16 = bf16Activations;
        var parameters = model.Parameters;
        using var optimizer = new AdamW([.. parameters.Select(p => new OptimizerParameter(p.Name, p.Value, Trainer.Decays(p.Name)))], 1e-4f, weightDecay: 0.1f);
        using var ids = IndexTensor.FromArray(device, "input_ids", [.. Enumerable.Range(0, b * l).Select(_ => rng.Next(vocab))], b, l);
        using var targets = Mamba2LM.NextTokenTargets(ids);
        if (comm.Size > 1)
        {
            Console.WriteLine($"device: {device.Name} x {comm.Size} ranks; LM {config.NLayer} x d_model {mixer.DModel}, vocab {vocab}; batch {b} x {l} a rank; {precision.Name()}");
            TrainScalingBench.Run(comm, model, optimizer, ids, targets, headBlock, r.GetValue(Warmup), r.GetValue(Repeats));
            comm.Dispose();
            return 0;
        }

        // One step recorded into s; what it allocated is disposed once s has run.
        List<IDisposable> Step(CommandStream s)
        {
            var made = new List<IDisposable>();
            var acts = model.ForwardLoss(ids, targets, stream: s, blockBytes: headBlock);
            made.Add(acts);
            var grads = model.Backward(acts, s);
            made.AddRange(grads.Values);
            optimizer.Step([.. parameters.Select(p => grads[p.Name])], 1f, s);
            s.Section(ProfileSections.Optimizer);
            return made;
        }

        // At least one untimed step: the first, whose memory is measured.
        var timing = RowTimer.Time(device, Step, Math.Max(1, r.GetValue(Warmup)), r.GetValue(Repeats));
        var stepMemory = timing.PeakMemoryBytes;

        // The Trainer's way (TrainingSteps): no caller stream, so the model submits a layer at a time (recording the
        // next while the device runs one) and frees each layer's scratch, the optimizer step is recorded into the
        // backward's last stage, and that stage runs on into the next step's first; as the Trainer, each step's batch
        // is a new upload and its loss and predictions are read back. Its peak memory and wall time over the repeats.
        var hostIds = ids.Values.ToArray();
        using var steps = new TrainingSteps(model, optimizer, 1f, headBlock);
        void StagedStep()
        {
            var stepIds = IndexTensor.FromArray(device, "input_ids", hostIds, b, l);
            var (loss, predictions) = steps.Step(stepIds, Mamba2LM.NextTokenTargets(stepIds));
            if (predictions.Length != b * l)
            {
                throw new InvalidOperationException($"bench train: a step returned {predictions.Length} predictions, not {b * l}.");
            }

            if (!float.IsFinite(loss))
            {
                // Random weights and tokens give a finite loss near ln(vocab): this is the device's kernels going wrong.
                throw new InvalidOperationException(
                    $"bench train: a step's loss on random weights is {loss} in {precision.Name()}: a kernel computed non-finite values on this device; the test program run on it (README, Layout) finds which.");
            }
        }

        var before = device.Memory.AllocatedBytes;
        device.Memory.ResetPeak();
        StagedStep();
        var wallMs = new List<double>();
        var host = HostActivity.Start(device);   // what the host does meanwhile that the device may wait for
        for (var i = 0; i < r.GetValue(Repeats); i++)
        {
            var clock = System.Diagnostics.Stopwatch.StartNew();
            StagedStep();
            wallMs.Add(clock.Elapsed.TotalMilliseconds);
        }

        steps.Finish();
        var hostPerStep = host.PerStep(device, wallMs.Count);
        var stagedMemory = device.Memory.PeakAllocatedBytes - before;
        var stagedWall = TimingStats.Of(wallMs).MedianMs;

        // Two more steps with every submission's span on the GPU clock: where the Trainer's way idles the GPU, in a
        // step and across the edge into the next.
        var timeline = new StreamTimeline();
        device.Timeline = timeline;
        var timelineClock = System.Diagnostics.Stopwatch.StartNew();
        try
        {
            StagedStep();
            StagedStep();
            steps.Finish();
        }
        finally
        {
            device.Timeline = null;
        }

        var timelineWall = timelineClock.Elapsed.TotalMilliseconds;

        // One more step with a barrier and a timestamp at each section mark, for the split; with --kernels, another
        // with one after every command too.
        GpuTimings Profiled(bool commands)
        {
            using var s = device.BeginStream();
            s.Profiling = true;
            s.ProfilingCommands = commands;
            s.Timestamp("start");
            var made = Step(s);
            s.Timestamp("end");
            try
            {
                return s.Submit();
            }
            finally
            {
                made.ForEach(m => m.Dispose());
            }
        }

        var profiled = Profiled(commands: false);
        var byCommand = r.GetValue(KernelRows) > 0 ? Profiled(commands: true) : null;
        var profiledMs = profiled.Milliseconds("start", "end");
        var median = timing.MedianMs;

        var paramCount = parameters.Sum(p => (long)p.Value.Length);
        var tokens = (double)b * l;
        // Matmul flops of a step: forward 2 and backward 4 per weight and token, projections and the tied head.
        var projFlops = 6 * tokens * config.NLayer * ((double)mixer.DInProj * mixer.DModel + (double)mixer.DModel * mixer.DInner);
        var headFlops = 6 * tokens * vocab * (double)mixer.DModel;
        Console.WriteLine($"device: {device.Name}; LM {config.NLayer} x d_model {mixer.DModel} ({(mixer.Causal ? "causal" : "bidirectional")}, d_state {mixer.DState}, headdim {mixer.HeadDim}, chunk {mixer.ChunkSize}), vocab {vocab}, {paramCount / 1e6:F1}M parameters; batch {b} x {l}; {precision.Name()} (activations {(model.Layers.Count > 0 && model.Layers[0].Mixer.ActivationType == TensorDType.BF16 ? "bf16" : "fp32")})");
        var table = new Table().AddColumns("step median ms", "min ms", "max ms", "tokens/s", "memory: one submission", "memory: a layer a submission (Trainer)");
        table.AddRow($"{median:F2}", $"{timing.MinMs:F2}", $"{timing.MaxMs:F2}", $"{tokens / median * 1e3:F0}", $"{stepMemory / 1048576.0:F0} MiB", $"{stagedMemory / 1048576.0:F0} MiB");
        AnsiConsole.Write(table);
        Console.WriteLine($"timed steps, GPU ms in order: {string.Join(", ", timing.SamplesMs.Select(v => v.ToString("F1", System.Globalization.CultureInfo.InvariantCulture)))}; host time to record a step: {timing.HostRecordMs:F1} ms (the GPU idles meanwhile)");
        Console.WriteLine($"as the Trainer runs a step (a layer a submission, the next recorded while one runs; the batch uploaded, the loss and predictions read): {stagedWall:F1} ms of wall time (median of {wallMs.Count}), {tokens / stagedWall * 1e3:F0} tokens/s; a step's host: {hostPerStep}");
        var gaps = timeline.Gaps();
        Console.WriteLine($"its GPU timeline (two more steps, {timeline.Spans.Count} submissions), a step: busy {timeline.BusyMs / 2:F1} ms over {timeline.SpanMs / 2:F1} ms, "
            + $"{(timeline.SpanMs - timeline.BusyMs) / 2:F1} ms idle between submissions (the step edge included); wall {timelineWall / 2:F1} ms, {(timelineWall - timeline.SpanMs) / 2:F1} ms of it before the first and after the last; "
            + $"longest idle: {string.Join(", ", gaps.Take(5).Select(g => $"{g.After} -> {g.Before} {g.Milliseconds:F2} ms"))}; "
            + $"longest host recordings: {string.Join(", ", timeline.Spans.OrderByDescending(x => x.RecordingMs).Take(3).Select(x => $"{x.Label} {x.RecordingMs:F2} ms"))}; "
            + $"longest host waits: {string.Join(", ", timeline.Waits.OrderByDescending(w => w.Milliseconds).Take(3).Select(w => $"for {w.Label} {w.Milliseconds:F2} ms{During(w)}"))}");
        string During(HostWait w) => timeline.RecordingDuring(w) is { Count: > 0 } rec ? $" (recording {string.Join(", ", rec)})" : "";
        if (timelineFile is not null)
        {
            File.WriteAllText(timelineFile.FullName, timeline.ToCsv());
            Console.WriteLine($"timeline written to {timelineFile.FullName}");
        }

        var sections = profiled.Sections(depth: 1);   // one row per section: the SSD's stages sum into "ssd"
        var split = new Table().AddColumns("section", "ms", "% of step", "GFLOP/s");
        foreach (var (name, t) in sections.Where(q => q.Name != "end"))
        {
            var flops = name switch { ProfileSections.Projections => projFlops, ProfileSections.LmHead => headFlops, _ => 0 };
            split.AddRow(name, $"{t:F2}", $"{100 * t / profiledMs:F1}", flops > 0 ? $"{flops / t / 1e6:F1}" : "");
        }

        double Sum(params string[] names) => sections.Where(q => names.Contains(q.Name)).Sum(q => q.Milliseconds);
        var proj = Sum(ProfileSections.Projections, ProfileSections.LmHead);
        var ssd = Sum(ProfileSections.Ssd);
        Console.WriteLine($"split (one profiled step, {profiledMs:F2} ms with a barrier at each section mark): projections + head {proj:F2} ms ({100 * proj / profiledMs:F1}%), SSD {ssd:F2} ms ({100 * ssd / profiledMs:F1}%), rest {profiledMs - proj - ssd:F2} ms ({100 * (profiledMs - proj - ssd) / profiledMs:F1}%)");
        AnsiConsole.Write(split);
        if (byCommand is not null)
        {
            WriteKernels(byCommand, r.GetValue(KernelRows));
        }

        KernelStatisticsReport.Print(device);
        return 0;
    }

    /// <summary>The <paramref name="rows"/> kernels of a command-profiled step that took longest, each in its section.</summary>
    private static void WriteKernels(GpuTimings step, int rows)
    {
        var stepMs = step.Milliseconds("start", "end");
        // Work after the step's last section mark is attributed to the closing timestamp's label.
        var commands = step.Commands().Select(c => c.Section == "end" ? c with { Section = "(no section)" } : c).ToList();
        var inCommands = commands.Sum(c => c.Milliseconds);
        Console.WriteLine($"kernels (one more step, {stepMs:F2} ms with a barrier and a timestamp after each of its {commands.Sum(c => c.Calls)} commands, {inCommands:F2} ms of it in them; "
            + $"the {Math.Min(rows, commands.Count)} longest of {commands.Count} by section):");
        var table = new Table().AddColumns("section", "kernel", "calls", "ms", "% of step", "us a call");
        foreach (var c in commands.OrderByDescending(c => c.Milliseconds).Take(rows))
        {
            table.AddRow(Markup.Escape(c.Section), Markup.Escape(c.Kernel), $"{c.Calls}", $"{c.Milliseconds:F2}", $"{100 * c.Milliseconds / stepMs:F1}", $"{1e3 * c.Milliseconds / c.Calls:F1}");
        }

        AnsiConsole.Write(table);
    }
}
