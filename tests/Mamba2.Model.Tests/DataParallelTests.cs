using System.Globalization;
using Mamba2.Cli;
using Mamba2.Model.Distributed;
using Mamba2.Model.Training;
using Xunit;

namespace Mamba2.Model.Tests;

/// <summary>
/// `mpirun -np 2 mamba2 train` (Open MPI; on lavapipe both ranks share the CPU): the same run as one process with the
/// same global batch, only the rank 0 files, resume, and a failing or hung rank ending the job with a message.
/// </summary>
public sealed class DataParallelTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("mamba2-dp-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>A global batch of 7: ranks of 3 and 4 rows, so the weighting by each rank's share matters.</summary>
    private string[] Train(string outDir, params string[] more) =>
        ["train", "--task", "selective-copy", "--steps", "8", "--batch", "7", "--eval-every", "4", "--save-every", "4", "--keep", "3",
         "--precision", "fp32", "--out", outDir, .. more];

    private static string[] MpiRun(int ranks, params string[] env)
    {
        var mpirun = Environment.GetEnvironmentVariable("PATH")!.Split(':').Select(d => Path.Combine(d, "mpirun")).FirstOrDefault(File.Exists)
            ?? throw new InvalidOperationException("mpirun not found: the data-parallel tests need Open MPI (apt-get install openmpi-bin; ./mamba2 installs it).");
        return [mpirun, "--allow-run-as-root", "--oversubscribe", "-np", ranks.ToString(CultureInfo.InvariantCulture), .. env.SelectMany(e => new[] { "-x", e })];
    }

    private static List<(string Split, int Step, double Loss)> Losses(string run) =>
        [.. File.ReadLines(Path.Combine(run, "metrics.csv")).Skip(1).Select(l => l.Split(','))
            .Select(f => (f[0], int.Parse(f[1], CultureInfo.InvariantCulture), double.Parse(f[2], CultureInfo.InvariantCulture)))];

    [Fact]
    public void TwoRanksTrainAsOneProcessWithTheSameGlobalBatchAndResumeExactly()
    {
        var alone = Path.Combine(_dir, "alone");
        var (code, _, err) = CliCapture.Run(Train(alone));
        Assert.True(code == 0, err);
        var two = Path.Combine(_dir, "two");
        (code, var stdout, err) = CliProcess.Run(MpiRun(2), Train(two));
        Assert.True(code == 0, err);
        Assert.Contains("x 2 ranks", stdout);

        var expected = Losses(alone);
        var actual = Losses(two);
        Assert.Equal(expected.Select(r => (r.Split, r.Step)), actual.Select(r => (r.Split, r.Step)));   // rank 0 alone wrote them
        Assert.Equal(10, actual.Count);   // 8 steps, evaluations at 4 and 8, each written once
        foreach (var (e, a) in expected.Zip(actual))
        {
            Assert.True(Math.Abs(a.Loss - e.Loss) <= 1e-5 * Math.Abs(e.Loss), $"{e.Split} step {e.Step}: {a.Loss} on 2 ranks, {e.Loss} alone");
        }

        Assert.Contains("\"world_size\": 2", File.ReadAllText(Path.Combine(two, "train.json")));
        Assert.True(Directory.Exists(Path.Combine(two, "step-8")));

        // Resumed at step 4 on 2 ranks: the same losses as the uninterrupted 2-rank run, bit for bit.
        var resumed = Path.Combine(_dir, "resumed");
        CopyDirectory(two, resumed);
        Directory.Delete(Path.Combine(resumed, "step-8"), recursive: true);
        (code, _, err) = CliProcess.Run(MpiRun(2), ["train", "--resume", Path.Combine(resumed, "step-4")]);
        Assert.True(code == 0, err);
        Assert.Equal(actual, Losses(resumed));
    }

    [Fact]
    public void AFailingRankEndsTheJobWithItsMessageAndTheOthersSayWhyTheyStop()
    {
        var wrapper = Script("fail.sh", """
            if [ "$OMPI_COMM_WORLD_RANK" = 1 ]; then export MAMBA2_VK_DEVICE=no-such-gpu; fi
            exec "$@"
            """);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var (code, _, err) = CliProcess.Run([.. MpiRun(2), "sh", wrapper], Train(Path.Combine(_dir, "failing")), limit: TimeSpan.FromMinutes(2));
        Assert.Equal(CliApp.BadInput, code);
        Assert.Contains("rank 1 of 2: error: No device name contains \"no-such-gpu\"", err);
        Assert.True(clock.Elapsed < TimeSpan.FromSeconds(60), $"the job took {clock.Elapsed.TotalSeconds:F0} s to end");
    }

    [Theory]
    [InlineData(2, "usr1")]
    [InlineData(2, "usr1-blocked")]
    [InlineData(1, "usr1")]
    [InlineData(2, "stop-file")]
    public void AStopEndsEveryRankAfterTheSameStepAndSaves(int size, string how)
    {
        // mpirun forwards SIGUSR1 to the ranks (Ctrl-C would make it end them at once): sent once a step is logged.
        // Also when the ranks start with it blocked (a job runner's mask that reached them): they unblock it; and
        // when mpirun runs one rank (its default action would end it unsaved). A STOP file in the run directory does
        // the same through any launcher (rank 0 sees it, all ranks agree).
        var ranksStartBlocked = how == "usr1-blocked";
        var run = Path.Combine(_dir, $"stopped-{size}-{how}");
        string[] ranks = ranksStartBlocked
            ? ["perl", "-MPOSIX", "-e", "sigprocmask(SIG_BLOCK, POSIX::SigSet->new(SIGUSR1)) or die 'sigprocmask'; exec @ARGV or die 'exec'"]
            : [];
        var launcher = Script("usr1.sh", $$"""
            "$@" & pid=$!
            while [ ! -f {{run}}/metrics.csv ] || [ $(wc -l < {{run}}/metrics.csv) -lt 3 ]; do sleep 0.2; done
            echo "usr1.sh: mpirun $pid $(grep -E 'Sig(Blk|Ign|Cgt)' /proc/$pid/status | tr '\n' ' ')" >&2
            {{(how == "stop-file" ? $"touch {run}/STOP" : "kill -USR1 $pid")}}; wait $pid
            """);
        string[] args = ["train", "--task", "selective-copy", "--steps", "100000", "--batch", "4", "--eval-every", "1000000", "--save-every", "1000000", "--out", run];
        var (code, stdout, err) = CliProcess.Run(["sh", launcher, .. MpiRun(size), .. ranks], args, limit: TimeSpan.FromMinutes(2));
        Assert.True(code == CliApp.Interrupted, $"exit {code}: {err}");
        var saved = Assert.Single(Directory.GetDirectories(run, "step-*"));
        Assert.Contains($"interrupted at step {Path.GetFileName(saved)["step-".Length..]}: saved", stdout);
        Assert.DoesNotContain("stopped by mpirun", err);   // no rank was ended before it was done
        Assert.False(File.Exists(Path.Combine(run, "STOP")));
    }

    [Fact]
    public void AHungRankEndsTheJobAfterTheTimeoutInsteadOfHangingIt()
    {
        // Rank 1 stops (SIGSTOP) mid-training; rank 0's next all-reduce waits out MAMBA2_MPI_TIMEOUT_S and ends the job.
        var wrapper = Script("hang.sh", """
            if [ "$OMPI_COMM_WORLD_RANK" = 1 ]; then "$@" & pid=$!; sleep 5; kill -STOP $pid; wait $pid; exit $?; fi
            exec "$@"
            """);
        string[] args = ["train", "--task", "selective-copy", "--steps", "100000", "--batch", "4", "--eval-every", "1000000", "--save-every", "1000000", "--out", Path.Combine(_dir, "hung")];
        var (code, _, err) = CliProcess.Run([.. MpiRun(2, "MAMBA2_MPI_TIMEOUT_S=5"), "sh", wrapper], args, limit: TimeSpan.FromMinutes(2));
        Assert.NotEqual(0, code);
        Assert.Matches("rank 0 of 2: (an all-reduce|a barrier) waited 5 s for the other ranks", err);
    }

    [Fact]
    public void BenchTrainOnTwoRanksReportsEachRankTheAggregateAndTheEfficiency()
    {
        var (code, stdout, err) = CliProcess.Run(MpiRun(2), ["bench", "train", "--layers", "2", "--d-model", "32", "--vocab", "64", "--batch", "2", "--seqlen", "64",
            "--dstate", "16", "--headdim", "16", "--chunk", "32", "--warmup", "1", "--repeats", "2"]);
        Assert.True(code == 0, err);
        Assert.Contains("x 2 ranks", stdout);
        Assert.Matches(@"2 ranks, 128 tokens each a step: aggregate \d+ tokens/s; rank 0 alone \d+ tokens/s \([\d.]+ ms a step\); scaling efficiency [\d.]+ %", stdout);
        Assert.Matches(@"│ 1 +│ [\d.]+ +│ \d+ +│ [\d.]+ +│ [\d.]+ +│", stdout);   // rank 1's row, printed by rank 0
        Assert.Matches(@"gradient sums: shared memory, \d+ thread\(s\) a rank", stdout);

        // --kernels profiles one process's step: refused under mpirun, not ignored.
        (code, _, err) = CliProcess.Run(MpiRun(2), ["bench", "train", "--layers", "1", "--d-model", "32", "--vocab", "64", "--batch", "2", "--seqlen", "64", "--kernels", "3"]);
        Assert.Equal(2, code);
        Assert.Contains("error: --kernels profiles one process's step; run bench train without mpirun for it.", err);
    }

    [Fact]
    public void SharedMemorySumsMatchMpisAllReduceAndOneProcess()
    {
        var alone = Path.Combine(_dir, "alone");
        var (code, _, err) = CliCapture.Run(Train(alone));
        Assert.True(code == 0, err);
        var expected = Losses(alone);

        // Two ranks: a + b either way, so shared memory and MPI give the same bits.
        var shared = Path.Combine(_dir, "shared");
        (code, var stdout, err) = CliProcess.Run(MpiRun(2), Train(shared));
        Assert.True(code == 0, err);
        Assert.Contains("sums through shared memory", Unwrapped(stdout));
        var mpi = Path.Combine(_dir, "mpi");
        (code, stdout, err) = CliProcess.Run(MpiRun(2, $"{SharedSums.Variable}=mpi"), Train(mpi));
        Assert.True(code == 0, err);
        Assert.Contains($"sums through MPI all-reduce ({SharedSums.Variable}=mpi)", Unwrapped(stdout));
        Assert.Equal(Losses(mpi), Losses(shared));

        // Three ranks (3, 2 and 2 of the 7 rows): each rank sums a slice of every rank's copy, in rank order.
        var three = Path.Combine(_dir, "three");
        (code, stdout, err) = CliProcess.Run(MpiRun(3), Train(three));
        Assert.True(code == 0, err);
        Assert.Contains("sums through shared memory", Unwrapped(stdout));
        foreach (var (e, a) in expected.Zip(Losses(three), (e, a) => (e, a)))
        {
            Assert.True(Math.Abs(a.Loss - e.Loss) <= 1e-5 * Math.Abs(e.Loss), $"{e.Split} step {e.Step}: {a.Loss} on 3 ranks, {e.Loss} alone");
        }
    }

    [Fact]
    public void AnUnknownSumsSettingIsRefusedWithItsName()
    {
        var (code, _, err) = CliProcess.Run(MpiRun(2, $"{SharedSums.Variable}=nccl"), Train(Path.Combine(_dir, "refused")), limit: TimeSpan.FromMinutes(2));
        Assert.Equal(CliApp.BadInput, code);
        Assert.Contains($"{SharedSums.Variable}=nccl: expected auto", err);
    }

    [Theory]
    [InlineData(7, 2)]
    [InlineData(8, 3)]
    [InlineData(5, 5)]
    public void RanksSplitTheBatchEvenlyAndWhole(int batch, int size)
    {
        var parts = Enumerable.Range(0, size).Select(r => DataParallel.Rows(batch, r, size)).ToList();
        Assert.Equal(0, parts[0].Start);
        Assert.All(parts.Zip(parts.Skip(1)), p => Assert.Equal(p.First.Start + p.First.Count, p.Second.Start));
        Assert.Equal(batch, parts.Sum(p => p.Count));
        Assert.True(parts.Max(p => p.Count) - parts.Min(p => p.Count) <= 1);
    }

    /// <summary>The console's text without its colours and with its lines joined (Spectre wraps long lines).</summary>
    private static string Unwrapped(string stdout) =>
        System.Text.RegularExpressions.Regex.Replace(System.Text.RegularExpressions.Regex.Replace(stdout, @"\x1b\[[0-9;?]*[A-Za-z=]?", ""), @"\s+", " ");

    private string Script(string name, string body)
    {
        var path = Path.Combine(_dir, name);
        File.WriteAllText(path, body + "\n");
        return path;
    }

    private static void CopyDirectory(string from, string to)
    {
        Directory.CreateDirectory(to);
        foreach (var file in Directory.GetFiles(from))
        {
            File.Copy(file, Path.Combine(to, Path.GetFileName(file)));
        }

        foreach (var dir in Directory.GetDirectories(from))
        {
            CopyDirectory(dir, Path.Combine(to, Path.GetFileName(dir)));
        }
    }
}
