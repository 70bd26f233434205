using System.Text;
using Mamba2.Cli;
using Mamba2.Model.Checkpoints;
using Mamba2.Model.IO;
using Mamba2.Model.Training;
using Mamba2.Tests;
using Xunit;

namespace Mamba2.Model.Tests;

/// <summary>
/// Thousands of mutated inputs for every parser a user feeds files to (safetensors header and data ranges,
/// config.json, the train settings, trainer.json, metrics.csv, torch.save's pickle): each either loads or raises the parser's typed
/// error (InvalidDataException; NotSupportedException for a valid config of an unsupported model), never another
/// exception, and each finishes at once (a lying length must not make it allocate or read that much).
/// </summary>
public sealed class ParserFuzzTests : IDisposable
{
    private const int Mutations = 1500;
    private readonly string _dir = Directory.CreateTempSubdirectory("mamba2-fuzz-").FullName;

    public void Dispose() => Directory.Delete(_dir, recursive: true);

    /// <summary>One random edit: flip bits, overwrite with a byte from a small interesting set, cut, insert or duplicate a span.</summary>
    private static byte[] Mutate(byte[] input, Random rng)
    {
        var b = new List<byte>(input);
        var edits = 1 + rng.Next(3);
        byte[] interesting = [0, 0xFF, (byte)'"', (byte)'{', (byte)'}', (byte)'[', (byte)']', (byte)',', (byte)':', (byte)'-', (byte)'9', (byte)'e', 0x80, 0xC3];
        for (var e = 0; e < edits && b.Count > 0; e++)
        {
            var at = rng.Next(b.Count);
            switch (rng.Next(6))
            {
                case 0: b[at] ^= (byte)(1 << rng.Next(8)); break;
                case 1: b[at] = interesting[rng.Next(interesting.Length)]; break;
                case 2: b.RemoveRange(at, Math.Min(b.Count - at, 1 + rng.Next(16))); break;
                case 3: b.InsertRange(at, Enumerable.Range(0, 1 + rng.Next(8)).Select(_ => interesting[rng.Next(interesting.Length)])); break;
                case 4: b.RemoveRange(at, b.Count - at); break;   // truncation
                default:
                    var len = Math.Min(b.Count - at, 1 + rng.Next(32));
                    b.InsertRange(rng.Next(b.Count), b.GetRange(at, len));
                    break;
            }
        }

        return [.. b];
    }

    private static void Fuzz(byte[] seed, string path, Action load, params Type[] allowed)
    {
        var s = TestMath.NewSeed();
        var rng = new Random(s);
        var clock = System.Diagnostics.Stopwatch.StartNew();
        var loaded = 0;
        for (var i = 0; i < Mutations; i++)
        {
            var input = Mutate(seed, rng);
            File.WriteAllBytes(path, input);
            var started = clock.Elapsed;
            try
            {
                load();
                loaded++;
            }
            catch (Exception e) when (allowed.Contains(e.GetType()))
            {
                Assert.False(string.IsNullOrWhiteSpace(e.Message));
            }
            catch (Exception e)
            {
                Assert.Fail($"seed {s}, mutation {i}: {e.GetType().Name}: {e.Message}\ninput: {Convert.ToBase64String(input)}");
            }

            Assert.True(clock.Elapsed - started < TimeSpan.FromSeconds(2), $"seed {s}, mutation {i}: took {clock.Elapsed - started}");
        }

        Assert.True(loaded < Mutations, "no mutation was refused: the fuzzing does not reach the parser");
    }

    [Fact]
    public void SafetensorsHeadersAndDataRanges()
    {
        var path = Path.Combine(_dir, "t.safetensors");
        SafetensorsWriter.Write(path, [
            HostTensor.FromFloat32("a", [1f, 2f, 3f, 4f, 5f, 6f], 2, 3),
            HostTensor.FromInt64("ids", [7L, 8L], 2),
            HostTensor.FromFloat32("b", [0.5f], 1),
        ], new Dictionary<string, string> { ["format"] = "pt" });
        var seed = File.ReadAllBytes(path);
        Fuzz(seed, path, () =>
        {
            using var f = SafetensorsFile.Open(path);
            foreach (var name in f.Names)
            {
                _ = f.Read(name);
            }
        }, typeof(InvalidDataException));
    }

    [Fact]
    public void TorchPicklesInTheirZip()
    {
        // Mutations of data.pkl (the zip's own checksums would refuse most mutations of the archive before the pickle).
        var p = new TorchPickle().Global("collections", "OrderedDict").Op(')').Op('R').Op('(');
        p.Str("a").Tensor("FloatStorage", "0", 12, 0, [3, 4], [4, 1]);
        p.Str("b").Tensor("FloatStorage", "0", 12, 4, [4, 2], [1, 4]);
        p.Str("c").Tensor("HalfStorage", "1", 2, 0, [2], [1]);
        var pickle = Path.Combine(_dir, "data.pkl");
        var zip = Path.Combine(_dir, "pytorch_model.bin");
        byte[] floats = [.. Enumerable.Range(0, 12).SelectMany(i => BitConverter.GetBytes((float)i))];
        Fuzz(p.Op('u').Bytes, pickle, () =>
        {
            TorchPickle.WriteZip(zip, File.ReadAllBytes(pickle), ("0", floats), ("1", [0, 0x3C, 0, 0x40]));
            using var f = PyTorchCheckpoint.Open(zip);
            foreach (var name in f.Names)
            {
                _ = f.Read(name);
            }
        }, typeof(InvalidDataException));
    }

    [Fact]
    public void ConfigJson()
    {
        var dir = Path.Combine(_dir, "model");
        Directory.CreateDirectory(dir);
        var seed = Encoding.UTF8.GetBytes("""
            {"hidden_size": 64, "vocab_size": 16, "num_hidden_layers": 2, "state_size": 16, "head_dim": 32, "expand": 2,
             "n_groups": 1, "use_bias": false, "use_conv_bias": true, "tie_word_embeddings": true, "layer_norm_epsilon": 1e-5,
             "time_step_limit": [0.0, Infinity], "ssm_cfg": {}}
            """);
        Fuzz(seed, Path.Combine(dir, Mamba2Checkpoint.ConfigFile), () => ValidConfig(dir), typeof(InvalidDataException), typeof(NotSupportedException));
        var mambaSsm = Encoding.UTF8.GetBytes("""
            {"d_model": 64, "n_layer": 2, "vocab_size": 16, "pad_vocab_size_multiple": 8,
             "ssm_cfg": {"layer": "Mamba2", "d_state": 16, "headdim": 32, "ngroups": 1, "dt_limit": [0.0, 1.0], "D_has_hdim": false}}
            """);
        Fuzz(mambaSsm, Path.Combine(dir, Mamba2Checkpoint.ConfigFile), () => ValidConfig(dir), typeof(InvalidDataException), typeof(NotSupportedException));
    }

    /// <summary>Reads a config (which must throw only its typed errors), then checks its values as Load does.</summary>
    private static void ValidConfig(string dir)
    {
        var config = Mamba2Checkpoint.ReadConfig(dir);
        try
        {
            config.Validate();
        }
        catch (ArgumentException)
        {
            // Values out of range: Validate's own error, which Load turns into exit code 2 as any ArgumentException.
        }
    }

    [Fact]
    public void TrainSettingsJson()
    {
        var path = Path.Combine(_dir, "train.json");
        var seed = Encoding.UTF8.GetBytes(TrainSettings.For("selective-copy").ToJson());
        Fuzz(seed, path, () => TrainSettings.FromJson(path, new TrainSettings()), typeof(InvalidDataException));
    }

    [Fact]
    public void TrainerStateJson()
    {
        var dir = Path.Combine(_dir, "step-4");
        Directory.CreateDirectory(dir);
        var seed = Encoding.UTF8.GetBytes("""{"Step":4,"OptimizerSteps":4,"Task":"selective-copy","Options":{"Batch":4,"Steps":8,"LearningRate":0.001}}""");
        Fuzz(seed, Path.Combine(dir, "trainer.json"), () => Trainer.StepOf(dir), typeof(InvalidDataException));
    }

    [Fact]
    public void MetricsCsv()
    {
        var path = Path.Combine(_dir, "metrics.csv");
        var seed = Encoding.UTF8.GetBytes("""
            split,step,loss,accuracy,lr,tokens_per_s,seconds
            train,1,2.3,0.1,0.0001,100.0,0.50
            eval,1,2.2,0.1,0.0001,100.0,0.60
            train,2,2.1,0.2,0.0002,120.0,1.10

            """.Replace("\r\n", "\n", StringComparison.Ordinal));
        Fuzz(seed, path, () => new MetricsLog(path, resumeStep: 1).Dispose(), typeof(InvalidDataException));
    }
}
