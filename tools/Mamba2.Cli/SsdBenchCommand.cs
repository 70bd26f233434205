using System.CommandLine;
using Mamba2.Model.Ops;
using Mamba2.Model.Ops.Ssd;
using Mamba2.Model.Tensors;
using Mamba2.Vulkan;
using Spectre.Console;

namespace Mamba2.Cli;

/// <summary><c>mamba2 bench ssd</c>: the causal SSD forward (and with --backward, forward + backward) at a given shape, GPU-timestamped.</summary>
internal static class SsdBenchCommand
{
    private static readonly Option<int> Batch = new("--batch") { DefaultValueFactory = _ => 8, Description = "b" };
    private static readonly Option<int> SeqLen = new("--seqlen") { DefaultValueFactory = _ => 2048, Description = "L" };
    private static readonly Option<int> Heads = new("--heads") { DefaultValueFactory = _ => 32, Description = "h" };
    private static readonly Option<int> HeadDim = new("--headdim") { DefaultValueFactory = _ => 64, Description = "p" };
    private static readonly Option<int> Groups = new("--groups") { DefaultValueFactory = _ => 1, Description = "g" };
    private static readonly Option<int> DState = new("--dstate") { DefaultValueFactory = _ => 128, Description = "n" };
    private static readonly Option<int> Chunk = new("--chunk") { DefaultValueFactory = _ => 256, Description = "chunk size Q" };
    private static readonly Option<int> Warmup = new("--warmup") { DefaultValueFactory = _ => 3, Description = "Untimed runs first" };
    private static readonly Option<int> Repeats = new("--repeats") { DefaultValueFactory = _ => 20, Description = "Timed runs (median reported)" };
    private static readonly Option<bool> Backward = new("--backward") { Description = "Time forward + backward (all gradients) instead of the forward alone" };
    private static readonly Option<bool> NoGate = new("--no-gate") { Description = "Leave out z (the gate)" };
    private static readonly Option<string> Direction = new("--direction")
    {
        DefaultValueFactory = _ => "causal",
        Description = "causal, or bidirectional sum (Bi-Mamba2) or shift (Hydra)",
    };

    private static readonly Option<string> DType =
        CommonOptions.DTypeOption("f32, or bf16: x, B, C, z and dy in bf16 (precision bf16), y and their gradients too, as mamba_ssm's kernels on bf16 inputs");

    private static readonly Option<bool> Naive = new("--naive") { Description = "Bidirectional as two complete causal runs combined (the naive composition)" };
    private static readonly Option<bool> Fused = new("--fused") { Description = "Bidirectional through the fused pass even where the default composes" };
    private static readonly Option<SsdPath> PathOption = new("--path")
    {
        HelpName = "auto|tiled|recurrent",
        DefaultValueFactory = _ => SsdPath.Auto,
        Description = "tiled (chunked, for GPUs), recurrent (CPU drivers) or auto (MAMBA2_SSD_PATH, else recurrent on a CPU device, tiled elsewhere)",
    };

    public static Command Create()
    {
        Direction.AcceptOnlyFromAmong("causal", "sum", "shift");
        return CommonOptions.GpuCommand("ssd", "SSD forward or forward + backward, causal or bidirectional (defaults: the 370m layer shape b8 L2048 h32 p64 g1 n128 chunk 256), with D, z, dt_bias and softplus, and the time of each stage", Run,
            Batch, SeqLen, Heads, HeadDim, Groups, DState, Chunk, Warmup, Repeats, Backward, NoGate, Direction, DType, Naive, Fused, PathOption);
    }

    private static int Run(ParseResult r)
    {
        int b = r.GetValue(Batch), l = r.GetValue(SeqLen), h = r.GetValue(Heads), p = r.GetValue(HeadDim);
        int g = r.GetValue(Groups), n = r.GetValue(DState), q = r.GetValue(Chunk);
        CommonOptions.CheckRuns(r.GetValue(Warmup), r.GetValue(Repeats));
        if (r.GetValue(Naive) && r.GetValue(Fused))
        {
            throw new ArgumentException("--naive and --fused: give one (the bidirectional composition or the fused pass).");
        }

        using var device = CommonOptions.Open(r);
        if (CommonOptions.ResolvePrecision(r, device) is not { } precision)
        {
            return 2;
        }
        var direction = r.GetValue(Direction) switch { "sum" => SsdDirection.BidirectionalSum, "shift" => SsdDirection.BidirectionalShift, _ => SsdDirection.Causal };
        if (CommonOptions.ResolveDType(r, DType, precision) is not { } dtype)
        {
            return 2;
        }

        DeviceCeilings.SpinUp(device);
        var rng = new Random();
        float[] R(long count, double lo, double hi) => BenchInputs.Uniform(rng, count, lo, hi);
        using var x = Tensor.FromArray(device, "x", R((long)b * l * h * p, -1, 1), dtype, b, l, h, p);
        using var z = Tensor.FromArray(device, "z", R((long)b * l * h * p, -1, 1), dtype, b, l, h, p);
        using var dt = Tensor.FromArray(device, "dt", R((long)b * l * h, -3, 0), b, l, h);
        using var a = Tensor.FromArray(device, "A", R(h, -8, -1), h);
        using var bm = Tensor.FromArray(device, "B", R((long)b * l * g * n, -1, 1), dtype, b, l, g, n);
        using var cm = Tensor.FromArray(device, "C", R((long)b * l * g * n, -1, 1), dtype, b, l, g, n);
        using var d = Tensor.FromArray(device, "D", R(h, 0, 1), h);
        using var bias = Tensor.FromArray(device, "dt_bias", R(h, -2, 0), h);
        using var dy = Tensor.FromArray(device, "dy", R((long)b * l * h * p, -1, 1), dtype, b, l, h, p);
        var gated = !r.GetValue(NoGate);
        var backward = r.GetValue(Backward);
        var options = new SsdOptions
        {
            ChunkSize = q,
            D = d,
            Z = gated ? z : null,
            DtBias = bias,
            DtSoftplus = true,
            Direction = direction,
            Path = r.GetValue(PathOption),
            Precision = precision,
            BidirectionalPath = r.GetValue(Naive) ? SsdBidirectionalPath.Composed : r.GetValue(Fused) ? SsdBidirectionalPath.Fused : SsdBidirectionalPath.Auto,
        };

        // Each call in its own submission with its outputs freed after it, as the suite (RowTimer): a loop that kept
        // every call's outputs timed the first touch of fresh memory (18 against 6.9 ms at b2 L16384 on the H100).
        var builds = device.PipelineBuilds;
        var timing = RowTimer.Time(device, s =>
        {
            var fwd = SsdOp.Forward(x, dt, a, bm, cm, options, s);
            return backward ? [fwd, SsdOp.Backward(dy, fwd, stream: s)] : [fwd];
        }, r.GetValue(Warmup), r.GetValue(Repeats));
        var (stats, perCall) = (timing.Stats, timing.PeakMemoryBytes);
        if (PipelineNote.Since(device, builds) is { Length: > 0 } note)
        {
            Console.Error.WriteLine($"warm-up{note}");
        }


        var shape = new BenchShape(b, l, h, p, g, n, q);
        var bytes = BenchCost.SsdBytes(shape, backward, gated, dtype.Bytes());
        var macs = BenchCost.SsdFlops(shape, backward, direction != SsdDirection.Causal) / 2;
        var table = new Table().AddColumns("shape", "median ms", "min ms", "max ms", "GB/s", "TFLOP/s", "memory per call");
        table.AddRow($"b{b} L{l} h{h} p{p} g{g} n{n} Q{q}", $"{stats.MedianMs:F4}", $"{stats.MinMs:F4}", $"{stats.MaxMs:F4}",
            $"{bytes / stats.MedianMs / 1e6:F1}", $"{2 * macs / stats.MedianMs / 1e9:F2}", $"{perCall / 1048576.0:F1} MiB");
        Console.WriteLine($"device: {device.Name}; SSD {direction}{(direction == SsdDirection.Causal ? "" : SsdOp.UsesFusedPass(device, options) ? " (fused)" : " (composed)")} {(backward ? "forward + backward" : "forward")} ({SsdOp.PathOn(device, options).ToString().ToLowerInvariant()} path) {precision.Name()}{(dtype == TensorDType.BF16 ? " on bf16 tensors" : "")} with D, {(gated ? "z, " : "")}dt_bias, softplus; {bytes / 1e6:F1} MB moved at least, {2 * macs / 1e9:F2} GFLOP; memory per call = peak beyond the inputs");
        AnsiConsole.Write(table);

        // Per-stage breakdown: more runs with a barrier and a timestamp after each stage, each stage's median printed.
        var stageRuns = Math.Min(r.GetValue(Repeats), StageRuns);
        if (direction == SsdDirection.Causal)
        {
            var runs = ProfiledRuns(device, stageRuns, s =>
            {
                SsdResult profiled;
                using (s.SectionScope("fwd"))
                {
                    profiled = s.Own(SsdOp.Forward(x, dt, a, bm, cm, options, s));
                }

                if (backward)
                {
                    using (s.SectionScope("bwd"))
                    {
                        s.Own(SsdOp.Backward(dy, profiled, stream: s));
                    }
                }
            });
            PrintStages(runs, "fwd/", SsdOp.StagesOf(SsdOp.PathOn(device, options), precision));
            if (backward)
            {
                PrintStages(runs, "bwd/", SsdOp.BackwardStagesOf(SsdOp.PathOn(device, options), precision));
            }
        }
        else if (backward)
        {
            // A bidirectional backward in place (tiled path, shared dt, B, C) times each causal run's stages.
            var runs = ProfiledRuns(device, stageRuns, s =>
            {
                var fwd = s.Own(SsdOp.Forward(x, dt, a, bm, cm, options, s));
                s.Section("fwd");
                using (s.SectionScope("bwd"))
                {
                    s.Own(SsdOp.Backward(dy, fwd, stream: s));
                }
            });
            foreach (var run in SsdOp.BidirectionalRuns.Where(run => runs[0].Any(q => q.Name.StartsWith($"bwd/{run}/", StringComparison.Ordinal))))
            {
                Console.Write($"{run} run: ");
                PrintStages(runs, $"bwd/{run}/", SsdOp.BackwardStagesOf(SsdPath.Tiled, precision));
            }
        }

        KernelStatisticsReport.Print(device);

        return 0;
    }

    /// <summary>Profiled runs the stage times take their median over (at most; no more than --repeats).</summary>
    private const int StageRuns = 5;

    /// <summary>
    /// <paramref name="count"/> runs of <paramref name="record"/>, each in a submission of its own with a barrier and a
    /// timestamp after each section (what it records is freed after it): each run's sections.
    /// </summary>
    private static List<IReadOnlyList<(string Name, double Milliseconds)>> ProfiledRuns(GpuDevice device, int count, Action<CommandStream> record)
    {
        var runs = new List<IReadOnlyList<(string Name, double Milliseconds)>>();
        for (var i = 0; i < count; i++)
        {
            using var s = device.BeginStream();
            s.Profiling = true;
            s.Section("start");
            record(s);
            runs.Add(s.Submit().Sections());
        }

        return runs;
    }

    /// <summary>Each stage's median time over the runs, under <paramref name="prefix"/> (each run's summed over the batch pieces that repeat it).</summary>
    private static void PrintStages(List<IReadOnlyList<(string Name, double Milliseconds)>> runs, string prefix, IReadOnlyList<string> stages)
    {
        Console.WriteLine(string.Join("  ", stages.Select(stage =>
        {
            var times = runs.SelectMany(run => run.Where(q => q.Name == prefix + stage).Select(q => q.Milliseconds)).ToList();
            return times.Count > 0 ? $"{stage} {TimingStats.Of(times).MedianMs:F4} ms" : $"{stage} - (not marked)";
        })));
    }
}
