using System.Diagnostics;
using Mamba2.Tests;
using Xunit;

namespace Mamba2.Model.Tests;

/// <summary>
/// `mamba2 train` killed (SIGKILL, at random moments: mid-step, mid-save) and resumed from its newest checkpoint
/// until it finishes 1,000 steps, against the same run uninterrupted: the same training loss at every step (each
/// step's row exactly once), the same final evaluation. Real processes, so a kill is a kill.
/// </summary>
public sealed class TrainSoakTests : IDisposable
{
    private const int Steps = 1000;
    private readonly string _dir = Directory.CreateTempSubdirectory("mamba2-soak-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    [Fact]
    public void KilledAndResumedRunEndsAsTheUninterruptedOne()
    {
        var config = Path.Combine(_dir, "tiny.json");
        File.WriteAllText(config, """
            {"d_model": 16, "n_layer": 1, "d_state": 8, "head_dim": 8, "chunk_size": 16, "seq_len": 24, "batch": 4,
             "warmup_steps": 2, "eval_batches": 1, "seed": 3}
            """);
        string[] Fresh(string outDir) =>
            ["train", "--config", config, "--steps", $"{Steps}", "--eval-every", "100", "--save-every", "25", "--keep", "2", "--out", outDir];

        var reference = Path.Combine(_dir, "reference");
        Assert.Equal(0, CliProcess.Run([], Fresh(reference)).Code);

        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        var killed = Path.Combine(_dir, "killed");
        int kills = 0, code = -1;
        for (var attempt = 0; attempt < 40 && code != 0; attempt++)
        {
            var newest = Directory.Exists(killed)
                ? Directory.GetDirectories(killed, "step-*").Where(d => !Path.GetFileName(d).Contains('.', StringComparison.Ordinal))
                    .OrderByDescending(d => long.Parse(Path.GetFileName(d)["step-".Length..], System.Globalization.CultureInfo.InvariantCulture)).FirstOrDefault()
                : null;
            string[] args = newest is not null ? ["train", "--resume", newest]
                : Directory.Exists(killed) ? [.. Fresh(killed), "--overwrite"] : Fresh(killed);
            // The first attempts are killed a random number of steps into their run (1 to 60 past what the file
            // already shows: rows after the checkpoint are dropped and written again), then a random moment later
            // (mid-step or mid-save); later ones run to the end. By steps, not seconds: on a fast machine a kill by
            // the clock came after the run had finished.
            var metrics = Path.Combine(killed, "metrics.csv");
            var (target, delay) = (LastStep(metrics) + 1 + rng.Next(60), rng.Next(40));
            Stopwatch? reached = null;
            bool KillNow()
            {
                if (reached is null && LastStep(metrics) >= target)
                {
                    reached = Stopwatch.StartNew();
                }

                return reached is not null && reached.ElapsedMilliseconds >= delay;
            }

            code = CliProcess.Run([], args, attempt < 8 ? KillNow : null).Code;
            kills += code == -9 ? 1 : 0;
            Assert.True(code is 0 or -9, $"seed {seed}, attempt {attempt}: exit {code} for {string.Join(' ', args)}");
        }

        Assert.Equal(0, code);
        Assert.True(kills >= 3, $"seed {seed}: only {kills} kills landed: the soak did not interrupt the run");
        var expected = Rows(Path.Combine(reference, "metrics.csv"));
        var actual = Rows(Path.Combine(killed, "metrics.csv"));
        Assert.Equal(Enumerable.Range(1, Steps), actual.Train.Select(r => r.Step));
        Assert.Equal(expected.Train, actual.Train);
        Assert.Equal(expected.Eval, actual.Eval);
        Assert.Empty(Directory.GetDirectories(killed, "step-*.tmp-*"));
    }

    /// <summary>The step of the last whole row of a metrics.csv being written (0 while it has none).</summary>
    private static long LastStep(string csv)
    {
        try
        {
            using var reader = new StreamReader(new FileStream(csv, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete));
            var text = reader.ReadToEnd();
            var end = text.LastIndexOf('\n');
            var start = end <= 0 ? -1 : text.LastIndexOf('\n', end - 1);
            var fields = end <= 0 ? [] : text[(start + 1)..end].Split(',');
            return fields.Length > 1 && long.TryParse(fields[1], System.Globalization.CultureInfo.InvariantCulture, out var step) ? step : 0;
        }
        catch (IOException)
        {
            return 0;   // not there yet
        }
    }

    private static (List<(int Step, string Loss)> Train, List<(int Step, string Loss)> Eval) Rows(string csv)
    {
        var rows = File.ReadLines(csv).Skip(1).Select(l => l.Split(','))
            .Select(f => (Split: f[0], Step: int.Parse(f[1], System.Globalization.CultureInfo.InvariantCulture), Loss: f[2])).ToList();
        return ([.. rows.Where(r => r.Split == "train").Select(r => (r.Step, r.Loss))], [.. rows.Where(r => r.Split == "eval").Select(r => (r.Step, r.Loss))]);
    }
}
