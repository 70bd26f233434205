using System.Text.Json;
using Mamba2.Cli;
using Mamba2.Model.Ops;
using Mamba2.Tests;
using Xunit;

namespace Mamba2.Model.Tests;

/// <summary>`mamba2 train` end to end on a tiny configuration: outputs, checkpoints kept, and exact resume.</summary>
public sealed class TrainCliTests(GpuFixture gpu) : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("mamba2-train-cli-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private string Config()
    {
        var path = Path.Combine(_dir, "tiny.json");
        File.WriteAllText(path, """
            {"d_model": 16, "n_layer": 1, "d_state": 8, "head_dim": 8, "chunk_size": 16, "seq_len": 24, "batch": 4,
             "warmup_steps": 2, "eval_batches": 1, "seed": 3}
            """);
        return path;
    }

    private static List<string> TrainLosses(string csv) =>
        [.. File.ReadLines(csv).Skip(1).Where(l => l.StartsWith("train,", StringComparison.Ordinal)).Select(l => l.Split(',')[2])];

    [Fact]
    public void RunsWritesItsOutputsAndResumesExactly()
    {
        var config = Config();
        var full = Path.Combine(_dir, "full");
        var metricsOut = Path.Combine(_dir, "final.json");
        Assert.Equal(0, CliApp.Run(["train", "--task", "selective-copy", "--config", config, "--steps", "6", "--eval-every", "3", "--save-every", "2",
            "--keep", "2", "--out", full, "--metrics-out", metricsOut]));
        Assert.True(File.Exists(Path.Combine(full, "curves.png")));
        Assert.True(File.Exists(Path.Combine(full, "train.json")));
        Assert.Equal(["step-4", "step-6"], Directory.GetDirectories(full, "step-*").Select(Path.GetFileName).Order());
        using (var doc = JsonDocument.Parse(File.ReadAllText(metricsOut)))
        {
            Assert.True(doc.RootElement.GetProperty("loss").GetDouble() > 0);
            Assert.InRange(doc.RootElement.GetProperty("accuracy").GetDouble(), 0, 1);
        }

        // The same run stopped at 4, then resumed from step-4: the same six training losses as the uninterrupted run.
        var part = Path.Combine(_dir, "part");
        Assert.Equal(0, CliApp.Run(["train", "--task", "selective-copy", "--config", config, "--steps", "6", "--stop-at", "4", "--eval-every", "3",
            "--save-every", "2", "--out", part]));
        Assert.Equal(0, CliApp.Run(["train", "--resume", Path.Combine(part, "step-4")]));
        Assert.Equal(TrainLosses(Path.Combine(full, "metrics.csv")), TrainLosses(Path.Combine(part, "metrics.csv")));
    }

    /// <summary>
    /// Ctrl-C (SIGINT), a scheduler's stop (SIGTERM) and a STOP file in the run directory, once a step is logged: the
    /// run finishes its step, saves it and exits 130 (the STOP file removed, so that a resume goes on). (sh starts a
    /// background job with SIGINT ignored: perl gives it back its default first.)
    /// </summary>
    [Theory]
    [InlineData("INT")]
    [InlineData("TERM")]
    [InlineData("STOP")]
    public void ASignalStopsTheRunAfterItsStepAndSaves(string signal)
    {
        var run = Path.Combine(_dir, signal);
        var launcher = Path.Combine(_dir, "stop.sh");
        var stop = signal == "STOP" ? $"touch {run}/STOP" : $"kill -{signal} $pid";
        File.WriteAllText(launcher, $$"""
            perl -e '$SIG{INT} = "DEFAULT"; exec @ARGV or die "exec"' "$@" & pid=$!
            while [ ! -f {{run}}/metrics.csv ] || [ $(wc -l < {{run}}/metrics.csv) -lt 3 ]; do sleep 0.2; done
            {{stop}}; wait $pid

            """);
        string[] args = ["train", "--task", "selective-copy", "--config", Config(), "--steps", "100000", "--eval-every", "1000000", "--save-every", "1000000", "--out", run];
        var (code, stdout, err) = CliProcess.Run(["sh", launcher], args, limit: TimeSpan.FromMinutes(2));
        Assert.True(code == CliApp.Interrupted, $"exit {code}: {err}");
        var saved = Assert.Single(Directory.GetDirectories(run, "step-*"));
        Assert.Contains($"interrupted at step {Path.GetFileName(saved)["step-".Length..]}: saved", stdout);
        Assert.True(File.Exists(Path.Combine(saved, "model.safetensors")), "the checkpoint is complete");
        Assert.False(File.Exists(Path.Combine(run, "STOP")));
    }

    [Fact]
    public void AResumedRunKeepsItsPrecisionUnlessToldOtherwise()
    {
        // A mode other than the device's default where it runs one (a GPU: fp32; lavapipe with cooperative matrices:
        // fp32-fast): a resume that fell back to the default would compute otherwise.
        var device = gpu.Device;
        var fallback = PrecisionPolicy.DefaultFor(device);
        var modes = Enum.GetValues<Precision>();
        var chosen = modes.Where(q => q != fallback && PrecisionPolicy.WhyNot(device, q) is null).DefaultIfEmpty(fallback).First();
        string[] run = ["train", "--task", "selective-copy", "--config", Config(), "--steps", "6", "--save-every", "2", "--eval-every", "6", "--keep", "3"];
        var full = Path.Combine(_dir, "full");
        var part = Path.Combine(_dir, "part");
        Assert.Equal(0, CliApp.Run([.. run, "--precision", chosen.Name(), "--out", full]));
        Assert.Equal(0, CliApp.Run([.. run, "--precision", chosen.Name(), "--stop-at", "2", "--out", part]));
        var settings = Path.Combine(part, "train.json");
        using (var doc = JsonDocument.Parse(File.ReadAllText(settings)))
        {
            Assert.Equal(chosen.Name(), doc.RootElement.GetProperty("precision").GetString());
            Assert.False(doc.RootElement.GetProperty("bf16_activations").GetBoolean());
        }

        var (code, _, err) = CliCapture.Run("train", "--resume", Path.Combine(part, "step-2"), "--stop-at", "4");
        Assert.True(code == 0, err);
        Assert.Contains($"precision: {chosen.Name()}", err);
        Assert.Contains($"the run's, from {settings}", err);

        // Named in train.json, a mode unknown or one this device cannot run is refused, naming the file; --precision decides over it.
        var text = File.ReadAllText(settings);
        File.WriteAllText(settings, text.Replace($"\"precision\": \"{chosen.Name()}\"", "\"precision\": \"fp16\"", StringComparison.Ordinal));
        (code, _, err) = CliCapture.Run("train", "--resume", Path.Combine(part, "step-4"));
        Assert.Equal(CliApp.BadInput, code);
        Assert.Contains($"{settings}: precision 'fp16': expected fp32, fp32-fast or bf16", err);
        foreach (var cannot in modes.Where(q => PrecisionPolicy.WhyNot(device, q) is not null).Take(1))
        {
            var why = PrecisionPolicy.WhyNot(device, cannot);
            File.WriteAllText(settings, text.Replace($"\"precision\": \"{chosen.Name()}\"", $"\"precision\": \"{cannot.Name()}\"", StringComparison.Ordinal));
            (code, _, err) = CliCapture.Run("train", "--resume", Path.Combine(part, "step-4"));
            Assert.Equal(CliApp.BadInput, code);
            Assert.Contains($"{settings}: precision {cannot.Name()}: {why} (give --precision", err);
        }

        (code, _, err) = CliCapture.Run("train", "--resume", Path.Combine(part, "step-4"), "--precision", chosen.Name());
        Assert.True(code == 0, err);
        Assert.Equal(TrainLosses(Path.Combine(full, "metrics.csv")), TrainLosses(Path.Combine(part, "metrics.csv")));
    }

    [Fact]
    public void BadSettingsExitWithTwo()
    {
        var bad = Path.Combine(_dir, "bad.json");
        File.WriteAllText(bad, """{"d_modle": 16}""");
        Assert.Equal(CliApp.BadInput, CliApp.Run(["train", "--config", bad]));
        Assert.Equal(CliApp.BadInput, CliApp.Run(["train", "--task", "sorting"]));
        Assert.Equal(CliApp.BadInput, CliApp.Run(["train", "--task", "text"]));
    }
}
