using Mamba2.Cli;
using Mamba2.Model.IO;
using Xunit;

namespace Mamba2.Model.Tests;

/// <summary>
/// The CLI's error boundary, driven through the real command line with what a user gets wrong: every probe ends in
/// exit code 2 and one "error:" line that names the file or option, never a stack trace. Also the run directory's
/// rules: an existing run is not mixed into, resuming earlier sets the later checkpoints and metrics aside.
/// </summary>
public sealed class CliErrorTests : IDisposable
{
    private readonly string _dir = Directory.CreateTempSubdirectory("mamba2-cli-errors-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    private static (int Code, string Err) Run(params string[] args)
    {
        var err = new StringWriter();
        var (previous, previousOut) = (Console.Error, Console.Out);
        Console.SetError(err);
        Console.SetOut(new StringWriter());
        try
        {
            return (CliApp.Run(args), err.ToString());
        }
        finally
        {
            Console.SetError(previous);
            Console.SetOut(previousOut);
        }
    }

    private static void AssertBadInput((int Code, string Err) r, string mentions)
    {
        Assert.True(r.Code == CliApp.BadInput, $"exit {r.Code}: {r.Err}");
        Assert.DoesNotContain("   at ", r.Err, StringComparison.Ordinal);
        var error = Assert.Single(r.Err.Split('\n'), l => l.StartsWith("error:", StringComparison.Ordinal));
        Assert.True(error.Contains(mentions, StringComparison.Ordinal), $"'{mentions}' not in: {error}");
    }

    private string Write(string name, string text)
    {
        var path = Path.Combine(_dir, name);
        Directory.CreateDirectory(Path.GetDirectoryName(path)!);
        File.WriteAllText(path, text);
        return path;
    }

    private string TinyConfig() => Write("tiny.json", """
        {"d_model": 16, "n_layer": 1, "d_state": 8, "head_dim": 8, "chunk_size": 16, "seq_len": 24, "batch": 4,
         "warmup_steps": 2, "eval_batches": 1, "seed": 3}
        """);

    [Fact]
    public void FileProbesOfSsdAndForward()
    {
        var garbage = Write("garbage.safetensors", "not a safetensors file");
        AssertBadInput(Run("ssd", "--input", "/nodir/x.safetensors", "--output", Path.Combine(_dir, "o.safetensors")), "/nodir/x.safetensors");
        AssertBadInput(Run("ssd", "--input", _dir, "--output", Path.Combine(_dir, "o.safetensors")), "is a directory");
        AssertBadInput(Run("ssd", "--input", garbage, "--output", "/nodir/o.safetensors"), "/nodir/o.safetensors");
        AssertBadInput(Run("ssd", "--input", garbage, "--output", garbage), "is the input file");
        AssertBadInput(Run("ssd", "--input", garbage, "--output", Path.Combine(_dir, "o.safetensors")), "garbage.safetensors");

        // A NaN in an input is named, not passed on into NaN outputs.
        var nan = Path.Combine(_dir, "nan.safetensors");
        SafetensorsWriter.Write(nan, [
            HostTensor.FromFloat32("x", [0.1f, float.NaN, 0.3f, 0.4f, 0.5f, 0.6f, 0.7f, 0.8f], 1, 4, 1, 2),
            HostTensor.FromFloat32("dt", [0.1f, 0.2f, 0.3f, 0.4f], 1, 4, 1),
            HostTensor.FromFloat32("A", [-1f], 1),
            HostTensor.FromFloat32("B", [.. Enumerable.Repeat(0.5f, 8)], 1, 4, 1, 2),
            HostTensor.FromFloat32("C", [.. Enumerable.Repeat(0.5f, 8)], 1, 4, 1, 2),
        ]);
        AssertBadInput(Run("ssd", "--input", nan, "--output", Path.Combine(_dir, "y.safetensors")), "x[1] (flat index) is NaN");
        Assert.Equal(0, Run("ssd", "--input", nan, "--output", Path.Combine(_dir, "y.safetensors"), "--allow-nonfinite", "--chunk-size", "16").Code);

        // forward: a valid input_ids file; --model a file or missing; then every broken config.json.
        var ids = Path.Combine(_dir, "ids.safetensors");
        SafetensorsWriter.Write(ids, [HostTensor.FromInt32("input_ids", [1, 2, 3], [1, 3])]);
        AssertBadInput(Run("forward", "--model", ids, "--input", ids, "--output", Path.Combine(_dir, "logits.safetensors")), ids + " is a file (a Mamba2 checkpoint is a directory");
        AssertBadInput(Run("generate", "--model", "/nodir/model", "--prompt", "hi"), "/nodir/model does not exist");
        var model = Path.Combine(_dir, "model");
        foreach (var (config, mentions) in new[]
        {
            ("""{"hidden_size": 64, "vocab_size": 8, "num_hidden_layers": 1, "use_bias": "no"}""", "use_bias must be true or false"),
            ("""{"hidden_size": 64, "vocab_size": 8, "num_hidden_layers": 1, "tie_word_embeddings": false}""", "tie_word_embeddings"),
            ("", "not valid JSON"),
            ("""{"hidden_size": 16, "vocab_""", "not valid JSON"),
            ("[]", "not a JSON object"),
            ("""{"d_model": 16, "ssm_cfg": [1], "vocab_size": 8, "n_layer": 1}""", "ssm_cfg must be an object"),
            ("""{"hidden_size": {"a": 1}, "vocab_size": 8, "num_hidden_layers": 1}""", "hidden_size must be an integer"),
        })
        {
            Write(Path.Combine("model", "config.json"), config);
            AssertBadInput(Run("forward", "--model", model, "--input", ids, "--output", Path.Combine(_dir, "logits.safetensors")), mentions);
        }
    }

    /// <summary>What the parser refuses (an unknown option, a missing or malformed value) is bad input too: exit code 2 and a line naming it, not the help page.</summary>
    [Fact]
    public void ParseErrorsAreBadInput()
    {
        AssertBadInput(Run("train", "--bogus"), "'--bogus'");
        AssertBadInput(Run("bench", "ssd", "--chunk", "x"), "'--chunk'");
        AssertBadInput(Run("forward", "--model", _dir, "--input", Path.Combine(_dir, "in.safetensors")), "'--output' is required");
        var (_, err) = Run("bench", "ssd", "--bogus");
        Assert.Contains("'mamba2 bench ssd --help' lists the options", err);
    }

    /// <summary>
    /// .NET's " (Parameter 'ChunkSize')" and "Actual value was 0." are not what a user reads: the op's own text, which
    /// names the argument, and the value where the text lacks it. A message that does not name its argument keeps it.
    /// </summary>
    [Fact]
    public void ArgumentMessagesReadAsOneCleanLine()
    {
        var r = Run("bench", "ssd", "--batch", "1", "--seqlen", "32", "--heads", "2", "--headdim", "8", "--dstate", "8", "--chunk", "0");
        AssertBadInput(r, "chunk_size must be in 16..256. (got 0)");
        Assert.DoesNotContain("Parameter", r.Err, StringComparison.Ordinal);
        Assert.DoesNotContain("Actual value", r.Err, StringComparison.Ordinal);

        Assert.Equal("RmsNorm: eps must be finite and >= 0. (got -1)",
            CliApp.UserMessage(new ArgumentOutOfRangeException("eps", -1.0, "RmsNorm: eps must be finite and >= 0.")));
        Assert.Equal("step must be >= 0, not -3.",
            CliApp.UserMessage(new ArgumentOutOfRangeException("step", -3, "step must be >= 0, not -3.")));
        Assert.Equal("Value cannot be null. (Parameter 'weights')", CliApp.UserMessage(new ArgumentNullException("weights")));
        Assert.Equal("tokens: a b", CliApp.UserMessage(new ArgumentException("tokens: a\nb", "tokens")));
        Assert.Equal("no such file", CliApp.UserMessage(new FileNotFoundException("no such file")));

        // Thrown by the project's code, which names the file itself: no C# parameter name after it.
        var tiny = Write("tiny.txt", "hello\n");
        var text = Run("train", "--task", "text", "--data", tiny, "--seqlen", "100", "--steps", "1", "--out", Path.Combine(_dir, "t"));
        AssertBadInput(text, "has 6 tokens; a sequence of 100 needs at least 101.");
        Assert.DoesNotContain("Parameter", text.Err, StringComparison.Ordinal);
    }

    /// <summary>Associative recall's sequence is 4 positions a pair, each pair a distinct key: other lengths are refused before a run starts.</summary>
    [Fact]
    public void AssociativeRecallLengthsAreChecked()
    {
        foreach (var seqlen in new[] { "2", "30", "200" })
        {
            var run = Path.Combine(_dir, $"recall-{seqlen}");
            AssertBadInput(Run("train", "--task", "associative-recall", "--seqlen", seqlen, "--steps", "1", "--out", run), $"--seqlen {seqlen}: associative recall");
            Assert.False(Directory.Exists(run));
        }

        Assert.Throws<ArgumentException>(() => new Mamba2.Model.Training.Tasks.AssociativeRecallTask(pairs: 0));
        Assert.Throws<ArgumentException>(() => new Mamba2.Model.Training.Tasks.AssociativeRecallTask(pairs: 9, keys: 8));
    }

    /// <summary>The bench verbs' run counts and bench train's shape are checked before the device opens, naming the flag.</summary>
    [Fact]
    public void BenchRunsAndStepShapeAreChecked()
    {
        string[] tiny = ["--layers", "1", "--d-model", "32", "--vocab", "40", "--dstate", "8", "--headdim", "16", "--chunk", "16"];
        AssertBadInput(Run(["bench", "train", .. tiny, "--batch", "1", "--seqlen", "1"]), "--seqlen at least 2");
        AssertBadInput(Run(["bench", "train", .. tiny, "--batch", "0", "--seqlen", "24"]), "--batch must be positive");
        AssertBadInput(Run(["bench", "train", .. tiny, "--batch", "1", "--seqlen", "24", "--repeats", "0"]), "--repeats >= 1");
        AssertBadInput(Run(["bench", "train", .. tiny, "--batch", "1", "--seqlen", "24", "--timeline", "/nodir/t.json"]), "--timeline /nodir/t.json: the directory does not exist");
        AssertBadInput(Run(["bench", "train", .. tiny, "--batch", "1", "--seqlen", "24", "--timeline", _dir]), "is a directory");
        AssertBadInput(Run(["bench", "train", .. tiny, "--batch", "64", "--seqlen", "100000000"]), "--seqlen 100000000");
        string[] wide = ["--layers", "1", "--d-model", "32", "--vocab", "100000000", "--dstate", "8", "--headdim", "16", "--chunk", "16", "--batch", "1", "--seqlen", "24"];
        AssertBadInput(Run(["bench", "train", .. wide]), "vocab_size (100000000) x d_model (32)");
        AssertBadInput(Run("bench", "ssd", "--batch", "64", "--seqlen", "1000000"), "pick a smaller shape");
        AssertBadInput(Run("bench", "ssd", "--batch", "1", "--seqlen", "32", "--heads", "2", "--headdim", "8", "--dstate", "8", "--chunk", "16", "--warmup", "-1"), "--warmup must be >= 0");
        AssertBadInput(Run("bench", "gemm", "--sizes", "32", "--repeats", "0"), "--repeats >= 1");
        AssertBadInput(Run("bench", "gemm", "--sizes", "100000x100000x100000"), "--sizes: '100000x100000x100000' has a matrix of more than");
        AssertBadInput(Run("bench", "gemm", "--sizes", "32,,64"), "--sizes '32,,64': an entry between commas is empty");
        AssertBadInput(Run("bench", "gemm", "--sizes", " , "), "--sizes ' , ' lists nothing");
        string[] ssd = ["bench", "ssd", "--batch", "1", "--seqlen", "32", "--heads", "2", "--headdim", "8", "--dstate", "8", "--chunk", "16"];
        AssertBadInput(Run([.. ssd, "--direction", "sum", "--naive", "--fused"]), "--naive and --fused: give one");
        string[] suite = ["bench", "--batch", "1", "--seqlen", "32", "--heads", "2", "--headdim", "8", "--dstate", "8", "--chunk", "16", "--ops", "ssd"];
        AssertBadInput(Run([.. suite[..^1], "ssd,,gemm"]), "--ops 'ssd,,gemm': an entry between commas is empty");
        AssertBadInput(Run([.. suite, "--threshold", "-1"]), "--threshold -1: expected a fraction >= 0");
        AssertBadInput(Run([.. suite, "--threshold", "NaN"]), "--threshold NaN");
        // The files the suite ends with, refused before it runs (it used to print its rows, then fail writing them).
        AssertBadInput(Run([.. suite, "--json", "/nodir/x.json"]), "--json /nodir/x.json: the directory does not exist");
        AssertBadInput(Run([.. suite, "--csv", _dir]), "is a directory");
        AssertBadInput(Run([.. suite, "--plot", Path.Combine(_dir, "p.jpg")]), "name a .png file");
        AssertBadInput(Run([.. suite, "--compare", "/nodir/old.json"]), "--compare /nodir/old.json: no such file");
        AssertBadInput(Run([.. suite, "--compare", _dir]), "--compare " + _dir + " is a directory, not a file");
        AssertBadInput(Run([.. suite, "--compare", Write("old.json", "not json")]), "not a bench report");
        AssertBadInput(Run("bench", "gemm", "--sizes", "16", "--precision", "fp32", "--tc-tile", "64x64x32/32x32"), "--tc-tile applies to tensor-core products");
        AssertBadInput(Run("bench", "gemm", "--sizes", "16", "--operands", "fp32", "--staging", "converted"), "--staging applies to tensor-core products");
    }

    [Fact]
    public void TrainSettingsProbes()
    {
        foreach (var (json, mentions) in new[] { ("""{"steps": "ten"}""", "steps"), ("{steps", "not valid JSON"), ("[1,2]", "not a JSON object") })
        {
            AssertBadInput(Run("train", "--config", Write("bad.json", json), "--out", Path.Combine(_dir, "r")), mentions);
        }

        // Numbers the run would refuse (or misuse) only later: refused first, with no run directory written.
        foreach (var (json, mentions) in new[]
        {
            ("""{"warmup_steps": -5}""", "warmup_steps must be >= 0, got -5"), ("""{"eval_batches": 0}""", "eval_batches must be >= 1"),
            ("""{"chunk_size": 1000}""", "chunk_size must be in 16..256"), ("""{"max_grad_norm": -1}""", "max_grad_norm must be finite and > 0"),
            ("""{"weight_decay": -0.5}""", "weight_decay must be finite and >= 0"),
        })
        {
            var run = Path.Combine(_dir, "refused");
            AssertBadInput(Run("train", "--task", "selective-copy", "--config", Write("numbers.json", json), "--out", run), mentions);
            Assert.False(Directory.Exists(run), json);
        }

        AssertBadInput(Run("train", "--task", "text", "--data", "/nodir/x.txt", "--out", Path.Combine(_dir, "t")), "--data /nodir/x.txt: no such file");
        AssertBadInput(Run("train", "--task", "text", "--data", _dir, "--out", Path.Combine(_dir, "t")), "--data " + _dir + " is a directory, not a file");
        AssertBadInput(Run("train", "--config", _dir, "--out", Path.Combine(_dir, "t")), "--config " + _dir + " is a directory, not a file");
        AssertBadInput(Run("train", "--config", "/nodir/c.json", "--out", Path.Combine(_dir, "t")), "--config /nodir/c.json: no such file");
        Assert.False(Directory.Exists(Path.Combine(_dir, "t")));
        AssertBadInput(Run("train", "--config", TinyConfig(), "--stop-at", "-5", "--out", Path.Combine(_dir, "s")), "--stop-at");
        AssertBadInput(Run("train", "--config", TinyConfig(), "--steps", "4", "--stop-at", "9", "--out", Path.Combine(_dir, "s")), "--stop-at 9 is past the run's last step (4");
        Assert.False(Directory.Exists(Path.Combine(_dir, "s")));
        AssertBadInput(Run("train", "--config", TinyConfig(), "--lr", "NaN", "--out", Path.Combine(_dir, "l")), "--lr");
        AssertBadInput(Run("train", "--config", TinyConfig(), "--batch", "64", "--seqlen", "100000000", "--out", Path.Combine(_dir, "big")), "--seqlen 100000000");
        Assert.False(Directory.Exists(Path.Combine(_dir, "big")));
        var file = Write("a-file", "x");
        AssertBadInput(Run("train", "--config", TinyConfig(), "--out", Path.Combine(file, "run")), "a-file");
        AssertBadInput(Run("train", "--config", TinyConfig(), "--out", Path.Combine(_dir, "m"), "--metrics-out", "/nodir/m.json"), "/nodir/m.json");
        AssertBadInput(Run("train", "--config", TinyConfig(), "--precision", "fp64", "--out", Path.Combine(_dir, "p")), "--precision");
    }

    [Fact]
    public void ADivergedRunStopsWithoutSavingIt()
    {
        // A learning rate that blows the weights up: the run stops at the first non-finite loss with exit code 5 and
        // one line naming the step; the checkpoint taken before stays, the diverged steps are never saved over it.
        var run = Path.Combine(_dir, "diverged");
        var good = Run("train", "--config", TinyConfig(), "--steps", "2", "--out", run);
        Assert.True(good.Code == 0, good.Err);
        // Caught by the evaluation a checkpoint comes with (before it is written), or by the next step's loss.
        foreach (var (every, name) in new[] { ("1", "evaluation loss after its update"), ("10", "training loss") })
        {
            var r = Run("train", "--lr", "1e30", "--steps", "20", "--save-every", every, "--eval-every", every, "--resume", Path.Combine(run, "step-2"));
            Assert.True(r.Code == CliApp.TrainingDiverged, $"exit {r.Code}: {r.Err}");
            var error = Assert.Single(r.Err.Split('\n'), l => l.StartsWith("error:", StringComparison.Ordinal));
            Assert.Matches($"^error: step [0-9]+: the {name} is NaN: the run diverged", error);
            Assert.Contains("The newest checkpoint is", error, StringComparison.Ordinal);
            Assert.Equal(["step-2"], Directory.GetDirectories(run, "step-*").Select(Path.GetFileName));
        }
    }

    [Fact]
    public void RunDirectoryRulesAndResumeProbes()
    {
        var config = TinyConfig();
        var run = Path.Combine(_dir, "run");
        string[] Train(params string[] more) => ["train", "--config", config, "--eval-every", "2", "--save-every", "2", "--keep", "3", .. more];
        Assert.Equal(0, Run(Train("--out", run, "--steps", "8")).Code);
        Assert.Equal(["step-4", "step-6", "step-8"], Directory.GetDirectories(run, "step-*").Select(Path.GetFileName).Order());

        // A new run into a directory holding one refuses; --overwrite starts over.
        AssertBadInput(Run(Train("--out", run, "--steps", "8")), "already holds a run");

        // Resume probes: a step that is not there, the run directory itself, a corrupt trainer state.
        AssertBadInput(Run("train", "--resume", Path.Combine(run, "step-999")), "step-999");
        AssertBadInput(Run("train", "--resume", run), "is a run directory");
        AssertBadInput(Run("train", "--resume", Path.Combine(run, "train.json")), "train.json is a file; name a checkpoint directory");
        AssertBadInput(Run("train", "--resume", Path.Combine(run, "step-8"), "--steps", "6"), "--steps 6 is before --resume's step 8");
        AssertBadInput(Run("train", "--resume", Path.Combine(run, "step-8"), "--stop-at", "8"), "--stop-at 8 is not after --resume's step 8");
        AssertBadInput(Run("train", "--resume", Path.Combine(run, "step-8"), "--task", "reverse", "--config", config), "--task, --config: a resumed run keeps");
        AssertBadInput(Run("train", "--resume", Path.Combine(run, "step-8"), "--d-model", "32"), "--d-model: a resumed run keeps");
        var copy = Path.Combine(_dir, "copy");
        CopyDirectory(run, copy);
        File.WriteAllText(Path.Combine(copy, "step-8", "trainer.json"), "{\"step\": ");
        AssertBadInput(Run("train", "--resume", Path.Combine(copy, "step-8")), "trainer.json");

        // Resuming at step 4 of a run that reached 8: the later checkpoints are set aside, metrics cut back to 4 (a
        // row cut by a kill dropped), and the continued run's checkpoints are the ones kept.
        File.AppendAllText(Path.Combine(run, "metrics.csv"), "train,9,0.1");
        var resumed = Run("train", "--resume", Path.Combine(run, "step-4"), "--stop-at", "6");
        Assert.True(resumed.Code == 0, resumed.Err);
        var aside = Assert.Single(Directory.GetDirectories(run, "abandoned-*"));
        Assert.Equal(["step-6", "step-8"], Directory.GetDirectories(aside, "step-*").Select(Path.GetFileName).Order());
        Assert.Equal(["step-4", "step-6"], Directory.GetDirectories(run, "step-*").Select(Path.GetFileName).Order());
        var steps = File.ReadLines(Path.Combine(run, "metrics.csv")).Skip(1).Where(l => l.StartsWith("train,", StringComparison.Ordinal))
            .Select(l => int.Parse(l.Split(',')[1], System.Globalization.CultureInfo.InvariantCulture)).ToList();
        Assert.Equal([1, 2, 3, 4, 5, 6], steps);

        // Interrupted saves' leftovers are removed when a run starts; --overwrite clears the run's own files.
        Directory.CreateDirectory(Path.Combine(run, "step-10.tmp-0123"));
        Assert.Equal(0, Run(Train("--out", run, "--overwrite", "--steps", "2")).Code);
        Assert.Empty(Directory.GetDirectories(run, "step-*.tmp-*"));
        Assert.Equal(["step-2"], Directory.GetDirectories(run, "step-*").Select(Path.GetFileName));
    }

    [Fact]
    public void OnlyBugsAreInternalErrors()
    {
        Assert.True(CliApp.IsUserError(new DirectoryNotFoundException()));
        Assert.True(CliApp.IsUserError(new System.Text.Json.JsonException()));
        Assert.True(CliApp.IsUserError(new NotSupportedException()));
        Assert.False(CliApp.IsUserError(new InvalidOperationException()));
        Assert.False(CliApp.IsUserError(new NullReferenceException()));
        Assert.False(CliApp.IsUserError(new IndexOutOfRangeException()));
    }

    private static void CopyDirectory(string from, string to)
    {
        foreach (var dir in Directory.GetDirectories(from, "*", SearchOption.AllDirectories))
        {
            Directory.CreateDirectory(dir.Replace(from, to, StringComparison.Ordinal));
        }

        Directory.CreateDirectory(to);
        foreach (var f in Directory.GetFiles(from, "*", SearchOption.AllDirectories))
        {
            File.Copy(f, f.Replace(from, to, StringComparison.Ordinal));
        }
    }
}
