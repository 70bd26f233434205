using System.Text.Json;
using System.Text.Json.Nodes;
using Mamba2.Cli;
using Xunit;

namespace Mamba2.Model.Tests;

/// <summary>`mamba2 bench` (the suite) on the CPU driver: the report's rows, files and the regression check.</summary>
public sealed class BenchCliTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("mamba2-bench-cli-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string At(string name) => Path.Combine(_dir, name);

    [Fact]
    public void QuickPresetReportsEveryKindOfRowAgainstMeasuredCeilings()
    {
        // The exact mode's rows (the fused bidirectional pass among them), whatever the device's default.
        Assert.Equal(0, CliApp.Run(["bench", "--preset", "quick", "--repeats", "1", "--warmup", "0", "--precision", "fp32",
            "--json", At("q.json"), "--csv", At("q.csv"), "--plot", At("q.png")]));

        var doc = JsonNode.Parse(File.ReadAllText(At("q.json")))!;
        Assert.True(doc["ceilings"]!["copy_gb_per_s"]!.GetValue<double>() > 0);
        Assert.True(doc["ceilings"]!["fp32_tflop_per_s"]!.GetValue<double>() > 0);
        var rows = doc["rows"]!.AsArray().Select(r => r!).ToList();
        string Id(JsonNode r) => $"{r["op"]} | {r["impl"]} | {r["pass"]}";
        foreach (var expected in new[]
                 {
                     "ssd causal | ours | fwd", "ssd causal | ours | fwd+bwd",
                     "ssd bidir sum | ours fused | fwd", "ssd bidir sum | ours fused | fwd+bwd",
                     "ssd bidir shift | ours fused | fwd+bwd", "ssd bidir shift | ours composed | fwd+bwd",
                     "ssd bidir sum | naive (flipped copies) | fwd", "ssd bidir sum | naive (flipped copies) | fwd+bwd",
                     "mamba2 layer | ours | fwd+bwd", "mamba2 layer bidir | ours | fwd+bwd", "gemm in_proj | ours | fwd",
                     "rmsnorm gated | ours | fwd+bwd", "rmsnorm | ours | fwd", "conv1d | ours | fwd+bwd",
                 })
        {
            Assert.Contains(expected, rows.Select(Id));
        }

        foreach (var r in rows)
        {
            foreach (var field in new[] { "median_ms", "min_ms", "max_ms", "gb_per_s", "tflop_per_s", "pct_bandwidth", "pct_fp32" })
            {
                var v = r[field]!.GetValue<double>();
                Assert.True(v > 0 && double.IsFinite(v), $"{Id(r)}: {field} = {v}");
            }

            Assert.True(r["min_ms"]!.GetValue<double>() <= r["median_ms"]!.GetValue<double>());
            Assert.Equal(256, r["seqlen"]!.GetValue<int>());
        }

        // Bidirectional and naive rows carry their ratios to the causal row of the same pass (the goal's terms).
        foreach (var r in rows.Where(r => r["op"]!.GetValue<string>() is "ssd bidir sum" or "ssd bidir shift"))
        {
            var causal = rows.Single(c => Id(c) == $"ssd causal | ours | {r["pass"]}");
            Assert.Equal(r["median_ms"]!.GetValue<double>() / causal["median_ms"]!.GetValue<double>(), r["x_causal_time"]!.GetValue<double>(), 1e-12);
            Assert.Equal(r["peak_memory_mib"]!.GetValue<double>() / causal["peak_memory_mib"]!.GetValue<double>(), r["x_causal_memory"]!.GetValue<double>(), 1e-12);
        }

        var layerBidir = rows.Single(r => Id(r) == "mamba2 layer bidir | ours | fwd+bwd");
        Assert.True(layerBidir["x_causal_time"]!.GetValue<double>() > 0);
        Assert.Null(rows.Single(r => Id(r) == "ssd causal | ours | fwd")["x_causal_time"]);

        var csv = File.ReadAllLines(At("q.csv"));
        Assert.StartsWith("op,impl,pass,shape,", csv[0]);
        Assert.EndsWith(",x_causal_time,x_causal_memory", csv[0]);
        Assert.Equal(rows.Count + 1, csv.Length);
        Assert.True(new FileInfo(At("q.png")).Length > 1000);
    }

    [Fact]
    public void CompareFlagsRowsSlowerThanTheThreshold()
    {
        string[] run = ["bench", "--preset", "quick", "--ops", "gemm", "--repeats", "1", "--warmup", "0"];
        Assert.Equal(0, CliApp.Run([.. run, "--json", At("base.json")]));

        // An earlier run 1e9x faster than anything possible: every row is a regression (exit code 3) ... (100x was
        // not enough: on the CPU driver, with other tests busy on every core, the base run's one call was once 100x
        // slower than the next run's.)
        Scale(At("base.json"), At("fast.json"), 1e-9);
        Assert.Equal(3, CliApp.Run([.. run, "--compare", At("fast.json")]));
        // ... and against one 1e9x slower, none is.
        Scale(At("base.json"), At("slow.json"), 1e9);
        Assert.Equal(0, CliApp.Run([.. run, "--compare", At("slow.json")]));
    }

    [Fact]
    public void SsdBenchTimesEachStageOfBothRunsOfABidirectionalBackward()
    {
        var stdout = new StringWriter();
        var previous = Console.Out;
        Console.SetOut(stdout);
        try
        {
            // The shift form reads g one step away in both runs: the stages whose kernels changed for it.
            Assert.Equal(0, CliApp.Run(["bench", "ssd", "--batch", "1", "--seqlen", "70", "--heads", "2", "--headdim", "8", "--dstate", "8", "--chunk", "32",
                "--backward", "--no-gate", "--direction", "shift", "--fused", "--path", "tiled", "--warmup", "0", "--repeats", "1", "--precision", "fp32"]));
        }
        finally
        {
            Console.SetOut(previous);
        }

        var lines = stdout.ToString().Split('\n');
        foreach (var run in new[] { "fwd run: ", "rev run: " })
        {
            var line = Assert.Single(lines, l => l.StartsWith(run, StringComparison.Ordinal));
            var stages = line[run.Length..].Split("  ").Select(part => part.Split(' ')).ToList();
            Assert.Equal(Mamba2.Model.Ops.Ssd.SsdOp.BackwardStages, stages.Select(st => st[0]));
            Assert.All(stages, st => Assert.True(double.Parse(st[1], System.Globalization.CultureInfo.InvariantCulture) >= 0, string.Join(' ', st)));
        }

        Assert.NotEqual(0, CliApp.Run(["bench", "ssd", "--path", "sideways"]));   // refused by the parser
    }

    [Theory]
    [InlineData("tiled")]
    [InlineData("recurrent")]
    public void SsdBenchTimesEachStageOfACausalForwardAndBackward(string path)
    {
        // Three timed runs: the stage times are medians over as many profiled runs.
        var (code, output, err) = CliCapture.Run(["bench", "ssd", "--batch", "1", "--seqlen", "70", "--heads", "2", "--headdim", "8", "--dstate", "8",
            "--chunk", "32", "--backward", "--path", path, "--warmup", "0", "--repeats", "3", "--precision", "fp32"]);
        Assert.True(code == 0, err);
        var ssdPath = path == "tiled" ? Mamba2.Model.Ops.Ssd.SsdPath.Tiled : Mamba2.Model.Ops.Ssd.SsdPath.Recurrent;
        var lines = output.Split('\n');
        foreach (var expected in new[] { Mamba2.Model.Ops.Ssd.SsdOp.StagesOf(ssdPath, Mamba2.Model.Ops.Precision.Fp32), Mamba2.Model.Ops.Ssd.SsdOp.BackwardStagesOf(ssdPath, Mamba2.Model.Ops.Precision.Fp32) })
        {
            var line = Assert.Single(lines, l => l.StartsWith(expected[0] + " ", StringComparison.Ordinal));
            var stages = line.Split("  ").Select(part => part.Split(' ')).ToList();
            Assert.Equal(expected, stages.Select(st => st[0]));
            Assert.All(stages, st => Assert.True(st.Length == 3 && st[2] == "ms" && double.Parse(st[1], System.Globalization.CultureInfo.InvariantCulture) >= 0, string.Join(' ', st)));
        }
    }

    [Fact]
    public void TrainBenchWritesTheTimelineAndListsTheLongestKernels()
    {
        var csv = At("timeline.csv");
        string[] tiny = ["bench", "train", "--layers", "2", "--d-model", "32", "--vocab", "64", "--batch", "2", "--seqlen", "64", "--dstate", "8",
            "--headdim", "8", "--chunk", "32", "--warmup", "1", "--repeats", "1"];
        var (code, output, err) = CliCapture.Run([.. tiny, "--timeline", csv, "--kernels", "3"]);
        Assert.True(code == 0, err);
        // --kernels: one more step timed command by command, its three longest kernels by section.
        Assert.Matches(@"kernels \(one more step, [0-9.]+ ms with a barrier and a timestamp after each of its \d+ commands, [0-9.]+ ms of it in them; the 3 longest of \d+ by section\)", output);
        var kernelRows = output[output.IndexOf("kernels (one more step", StringComparison.Ordinal)..].Split('\n').Where(line => line.StartsWith("│ ", StringComparison.Ordinal)).ToList();
        Assert.Equal(4, kernelRows.Count);   // the header and three kernels
        Assert.Equal(2, CliApp.Run([.. tiny, "--kernels", "-1"]));
        // What the host did meanwhile: its allocations and collections a step, beside the Trainer's wall time.
        Assert.Matches(@"a step's host: [0-9.]+ MiB allocated, \.NET collections \(gen0 / 1 / 2\) [0-9.]+ / [0-9.]+ / [0-9.]+, [0-9.]+ ms paused, [0-9.]+ driver allocations", output);
        var lines = File.ReadAllLines(csv);
        Assert.Equal("label,device_begin_ms,device_end_ms,host_begin_ms,host_launch_ms", lines[0]);
        // Two steps, each: the embedding with the first layer, the second layer and the head forward; norm_f with the
        // last layer, the layer below and the embedding with the optimizer backward: one submission each, nothing
        // uploaded between them.
        string[] step = ["forward 0", "forward 1", "forward 2", "backward 0", "backward 1", "backward 2"];
        Assert.Equal([.. step, .. step], lines.Skip(1).Select(l => l.Split(',')[0]));
        var times = lines.Skip(1).Select(l => l.Split(',').Skip(1).Select(v => double.Parse(v, System.Globalization.CultureInfo.InvariantCulture)).ToArray()).ToList();
        Assert.All(times, t => Assert.True(t.All(v => v >= 0)));
        // The second step's first stage runs after the first step's last (its optimizer update) on the device.
        Assert.True(times[step.Length][0] >= times[step.Length - 1][1], $"{times[step.Length][0]} < {times[step.Length - 1][1]}");
        Assert.Equal(2, CliApp.Run([.. tiny, "--timeline", At(Path.Combine("missing", "t.csv"))]));
    }

    [Fact]
    public void DeviceProbesTakeNoPrecision()
    {
        // They measure the device (both operand types, or shared memory), not a mode: --precision would mean nothing.
        foreach (var verb in new[] { "tensor-cores", "shared-memory" })
        {
            var (code, _, err) = CliCapture.Run("bench", verb, "--precision", "fp32");
            Assert.NotEqual(0, code);
            Assert.Contains("Unrecognized command or argument '--precision'", err);
        }
    }

    [Fact]
    public void UnknownOpsAndPresetsAreNamed()
    {
        Assert.Equal(2, CliApp.Run(["bench", "--preset", "quick", "--ops", "ssd,bogus"]));
        Assert.Equal(2, CliApp.Run(["bench", "--preset", "huge"]));
    }

    private static void Scale(string from, string to, double factor)
    {
        var doc = JsonNode.Parse(File.ReadAllText(from))!;
        foreach (var r in doc["rows"]!.AsArray())
        {
            r!["median_ms"] = r["median_ms"]!.GetValue<double>() * factor;
        }

        File.WriteAllText(to, doc.ToJsonString(new JsonSerializerOptions { WriteIndented = true }));
    }
}
