using System.Text.Json;
using Mamba2.Cli;
using Xunit;

namespace Mamba2.Model.Tests;

/// <summary>`mamba2 train` end to end on a tiny configuration: outputs, checkpoints kept, and exact resume.</summary>
public sealed class TrainCliTests : IDisposable
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
