using System.CommandLine;
using System.Globalization;
using Mamba2.Model.Ops;
using Mamba2.Model.Tensors;
using Mamba2.Vulkan;
using Spectre.Console;

namespace Mamba2.Cli;

/// <summary>
/// <c>mamba2 bench</c> with no verb: the suite. Measures the device's ceilings, then every op of a preset (or of one
/// shape from flags) with GPU timestamps, and prints a table; --json, --csv and --plot keep it, --compare checks it
/// against an earlier --json (exit code 3 on a regression).
/// </summary>
internal static class SuiteCommand
{
    private static readonly Option<string?> Preset = new("--preset") { Description = "quick (CPU-driver sized), 370m (b8 L2048 h32 p64 g1 n128 Q256), long (b2 L16384), bimamba (b2 h4 p16 g4 n16 Q128, L = 2..8192); default: quick on a CPU device, else 370m" };
    private static readonly Option<int?> Batch = new("--batch") { Description = "b (with any shape flag: one shape, the preset's first with these changes)" };
    private static readonly Option<int?> SeqLen = new("--seqlen") { Description = "L" };
    private static readonly Option<int?> Heads = new("--heads") { Description = "h" };
    private static readonly Option<int?> HeadDim = new("--headdim") { Description = "p" };
    private static readonly Option<int?> Groups = new("--groups") { Description = "g" };
    private static readonly Option<int?> DState = new("--dstate") { Description = "n" };
    private static readonly Option<int?> Chunk = new("--chunk") { Description = "chunk size Q" };
    private static readonly Option<string?> Ops = new("--ops") { Description = $"comma-separated subset of {string.Join(",", BenchPreset.AllOps)} (default: the preset's)" };
    private static readonly Option<int?> Warmup = new("--warmup") { Description = "untimed calls per row (default: the preset's)" };
    private static readonly Option<int?> Repeats = new("--repeats") { Description = "timed calls per row, median reported (default: the preset's)" };
    private static readonly Option<FileInfo?> Json = new("--json") { Description = "write the report as JSON (a 'rows' list)" };
    private static readonly Option<FileInfo?> Csv = new("--csv") { Description = "write the rows as CSV" };
    private static readonly Option<FileInfo?> PlotFile = new("--plot") { Description = "write time against seqlen per implementation as a PNG" };
    private static readonly Option<FileInfo?> Compare = new("--compare") { Description = "an earlier --json: print new/old per row, flag regressions (exit code 3)" };
    private static readonly Option<string> DType =
        CommonOptions.DTypeOption("the SSD rows' x, B, C and dy: f32, or bf16 (with --precision bf16; the naive rows, which flip fp32 tensors, are left out)");

    private static readonly Option<double> Threshold = new("--threshold") { DefaultValueFactory = _ => 0.10, Description = "a row is a regression when it is this much slower (0.10: 10%)" };

    public static void AddTo(Command bench)
    {
        foreach (var o in new Option[] { Preset, Batch, SeqLen, Heads, HeadDim, Groups, DState, Chunk, Ops, Warmup, Repeats, DType, Json, Csv, PlotFile, Compare, Threshold,
                     CommonOptions.PrecisionOption, CommonOptions.Device, CommonOptions.Validation })
        {
            bench.Options.Add(o);
        }

        bench.SetAction(Run);
    }

    private static int Run(ParseResult r)
    {
        var threshold = r.GetValue(Threshold);
        if (!(threshold >= 0 && double.IsFinite(threshold)))
        {
            throw new ArgumentException($"--threshold {threshold}: expected a fraction >= 0 (0.10: a row 10% slower than --compare's is a regression).");
        }

        // The files the run ends with, checked before it starts: a suite on a GPU runs for minutes.
        var compare = r.GetValue(Compare);
        foreach (var (option, file) in new[] { ("--json", r.GetValue(Json)), ("--csv", r.GetValue(Csv)), ("--plot", r.GetValue(PlotFile)) })
        {
            if (file is not null)
            {
                CommonOptions.CheckOutputFile(option, file, compare);
            }
        }

        if (r.GetValue(PlotFile) is { } plotFile && !plotFile.Extension.Equals(".png", StringComparison.OrdinalIgnoreCase))
        {
            throw new ArgumentException($"--plot {plotFile.FullName}: the plot is written as PNG; name a .png file.");
        }

        Dictionary<string, double>? earlier = null;
        if (compare is not null)
        {
            CommonOptions.CheckInputFile("--compare", compare);
            earlier = BenchReport.ReadMedians(compare.FullName);
        }

        using var device = CommonOptions.Open(r);
        if (CommonOptions.ResolvePrecision(r, device) is not { } precision)
        {
            return 2;
        }

        if (CommonOptions.ResolveDType(r, DType, precision) is not { } dtype)
        {
            return 2;
        }

        var preset = BenchPreset.Get(r.GetValue(Preset) ?? (device.Info.IsCpu ? "quick" : "370m"));
        var shapes = preset.Shapes;
        if (new[] { Batch, SeqLen, Heads, HeadDim, Groups, DState, Chunk }.Any(o => r.GetValue(o) is not null))
        {
            var f = shapes[0];
            shapes = [new BenchShape(r.GetValue(Batch) ?? f.Batch, r.GetValue(SeqLen) ?? f.SeqLen, r.GetValue(Heads) ?? f.Heads, r.GetValue(HeadDim) ?? f.HeadDim,
                r.GetValue(Groups) ?? f.Groups, r.GetValue(DState) ?? f.DState, r.GetValue(Chunk) ?? f.Chunk)];
        }

        var ops = r.GetValue(Ops) is { } list ? CommonOptions.SplitList("--ops", list) : [.. preset.Ops];
        if (ops.FirstOrDefault(o => !BenchPreset.AllOps.Contains(o)) is { } unknown)
        {
            throw new ArgumentException($"--ops: unknown op '{unknown}' (known: {string.Join(", ", BenchPreset.AllOps)}).");
        }

        var warmup = r.GetValue(Warmup) ?? preset.Warmup;
        var repeats = r.GetValue(Repeats) ?? preset.Repeats;
        CommonOptions.CheckRuns(warmup, repeats);

        var ceilings = DeviceCeilings.Measure(device);
        Console.WriteLine($"device: {device.Name} ({device.Info.DriverName}); measured ceilings: copy {ceilings.CopyGBps:F1} GB/s, fp32 FMA {ceilings.Fp32Tflops:F2} TFLOP/s, tensor cores {CeilingText(ceilings)}");
        Console.WriteLine($"preset {preset.Name}: {shapes.Count} shape(s), ops {string.Join(",", ops)}, {warmup} warm-up + {repeats} timed calls per row ({precision.Name()}; SSD on {dtype.Name()} tensors with D, dt_bias, softplus, no gate)");
        var rng = new Random();
        var rows = new List<BenchRow>();
        foreach (var s in shapes)
        {
            using (var ssd = new SsdSuite(device, s, rng, precision, dtype))
            {
                rows.AddRange(Report(device, ssd.Rows(ops, warmup, repeats)));
            }

            rows.AddRange(Report(device, LayerSuite.Rows(device, s, ops, rng, warmup, repeats, precision)));
        }

        var report = new BenchReport(device.Name, device.Info.DriverName, preset.Name, ceilings, rows, precision);
        Print(report);
        if (r.GetValue(Json) is { } json)
        {
            report.WriteJson(json.FullName);
        }

        if (r.GetValue(Csv) is { } csv)
        {
            report.WriteCsv(csv.FullName);
        }

        if (r.GetValue(PlotFile) is { } plot)
        {
            report.Plot(plot.FullName);
        }

        return earlier is not null ? CompareWith(report, earlier, r.GetValue(Threshold)) : 0;
    }

    /// <summary>
    /// Rows as they are measured, on stderr: a long preset shows progress, and the wall time the driver spent building
    /// a row's new pipelines (the first run on a machine: the SSD backward's kernels take about a minute on an H200).
    /// </summary>
    private static IEnumerable<BenchRow> Report(GpuDevice device, IEnumerable<BenchRow> rows)
    {
        var before = device.PipelineBuilds;
        foreach (var row in rows)
        {
            Console.Error.WriteLine($"  {row.Key}: {row.MedianMs:F4} ms{PipelineNote.Since(device, before)}");
            before = device.PipelineBuilds;
            yield return row;
        }
    }

    private static void Print(BenchReport report)
    {
        var c = report.Ceilings;
        var table = new Table().AddColumns("op", "impl", "pass", "shape", "median ms", "min ms", "max ms", "GB/s", "TFLOP/s", "% copy BW", "% fp32 peak", "memory MiB",
            "x causal time / memory");
        foreach (var r in report.Rows)
        {
            var x = report.AgainstCausal(r) is { } v ? $"{F(v.Time, 2)} / {(v.Memory is { } m ? F(m, 2) : "-")}" : "";
            table.AddRow(r.Op, r.Impl.EscapeMarkup(), r.Pass, r.Shape.ToString(), F(r.MedianMs, 4), F(r.MinMs, 4), F(r.MaxMs, 4), F(r.GBps, 1), F(r.Tflops, 3),
                F(100 * r.GBps / c.CopyGBps, 1), F(100 * r.Tflops / c.Fp32Tflops, 1), F(r.PeakMemoryBytes / 1048576.0, 1), x);
        }

        AnsiConsole.Write(table);
    }

    private static string F(double v, int digits) => v.ToString("F" + digits, CultureInfo.InvariantCulture);

    private static int CompareWith(BenchReport report, Dictionary<string, double> old, double threshold)
    {
        var table = new Table().AddColumns("row", "old ms", "new ms", "new / old", "");
        var regressions = 0;
        foreach (var r in report.Rows)
        {
            if (!old.TryGetValue(r.Key, out var before))
            {
                table.AddRow(r.Key, "-", F(r.MedianMs, 4), "-", "new row");
                continue;
            }

            var ratio = r.MedianMs / before;
            var slower = ratio > 1 + threshold;
            regressions += slower ? 1 : 0;
            table.AddRow(r.Key, F(before, 4), F(r.MedianMs, 4), F(ratio, 3), slower ? "[red]REGRESSION[/]" : ratio < 1 - threshold ? "[green]faster[/]" : "");
        }

        foreach (var gone in old.Keys.Except(report.Rows.Select(r => r.Key)))
        {
            table.AddRow(gone, F(old[gone], 4), "-", "-", "not measured");
        }

        AnsiConsole.Write(table);
        Console.WriteLine(regressions == 0 ? $"no row slower than {threshold:P0}" : $"{regressions} row(s) slower by more than {threshold:P0}");
        return regressions == 0 ? 0 : 3;
    }

    internal static string CeilingText(DeviceCeilings c) =>
        c.F16TensorTflops is null && c.Bf16TensorTflops is null
            ? "none"
            : string.Join(", ", new[] { ("f16", c.F16TensorTflops), ("bf16", c.Bf16TensorTflops) }
                .Where(t => t.Item2 is not null).Select(t => $"{t.Item1} {t.Item2:F1} TFLOP/s"));
}
