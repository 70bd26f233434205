using Mamba2.Cli;
using Mamba2.Model.Ops;
using Mamba2.Tests;
using Xunit;

namespace Mamba2.Model.Tests;

/// <summary>Every GPU verb prints its precision first (stderr) and refuses one it cannot run, with exit code 2.</summary>
public class PrecisionCliTests(GpuFixture gpu)
{
    private static (int Code, string Err) Run(params string[] args)
    {
        var err = new StringWriter();
        var previous = Console.Error;
        Console.SetError(err);
        try
        {
            return (CliApp.Run(args), err.ToString());
        }
        finally
        {
            Console.SetError(previous);
        }
    }

    /// <summary><see cref="Run"/> with stdout captured too.</summary>
    private static (int Code, string Err, string Out) RunWithOutput(params string[] args)
    {
        var output = new StringWriter();
        var previous = Console.Out;
        Console.SetOut(output);
        try
        {
            var (code, err) = Run(args);
            return (code, err, output.ToString());
        }
        finally
        {
            Console.SetOut(previous);
        }
    }

    /// <summary>Whether this device refuses bf16 tensors (TheRunsPrecisionComesFirstAndBadOnesExitWithTwo holds a refused bf16 to its reason).</summary>
    private bool Bf16TensorsRefused() => PrecisionPolicy.WhyNot(gpu.Device, Precision.Bf16) is not null || !gpu.Device.Capabilities.Storage16Bit;

    [Fact]
    public void TheRunsPrecisionComesFirstAndBadOnesExitWithTwo()
    {
        var (code, err) = Run("bench", "gemm", "--sizes", "8", "--warmup", "0", "--repeats", "1");
        Assert.Equal(0, code);
        var expected = PrecisionPolicy.DefaultFor(gpu.Device).Name();
        Assert.StartsWith($"precision: {expected} (the default on this device", err.Split('\n').First(l => l.StartsWith("precision", StringComparison.Ordinal)));

        (code, err) = Run("bench", "gemm", "--sizes", "8", "--precision", "fp64");
        Assert.Equal(2, code);
        Assert.Contains("--precision 'fp64': expected fp32, fp32-fast or bf16", err);

        (code, err) = Run("bench", "ssd", "--batch", "1", "--seqlen", "8", "--heads", "1", "--headdim", "4", "--dstate", "4", "--chunk", "16",
            "--precision", "fp32-fast", "--path", "recurrent", "--warmup", "0", "--repeats", "1");
        Assert.Equal(2, code);
        Assert.Contains(PrecisionPolicy.WhyNot(gpu.Device, Precision.Fp32Fast) ?? "the recurrent path computes in fp32 only", err);

        (code, err) = Run("bench", "gemm", "--sizes", "8", "--precision", "fp32-fast", "--operands", "f16");
        Assert.Equal(2, code);
        Assert.Contains("not both", err);

        // The suite in a tensor-core mode: every row labelled with it (the fused bidirectional pass takes the sum form only).
        var json = Path.Combine(Path.GetTempPath(), $"suite-{Guid.NewGuid():N}.json");
        try
        {
            (code, err) = Run("bench", "--preset", "quick", "--ops", "ssd,bidir,gemm", "--warmup", "0", "--repeats", "1", "--precision", "fp32-fast", "--json", json);
            if (PrecisionPolicy.WhyNot(gpu.Device, Precision.Fp32Fast) is { } fastWhy)
            {
                Assert.Equal(2, code);
                Assert.Contains(fastWhy, err);
            }
            else
            {
                Assert.Equal(0, code);
                var report = File.ReadAllText(json);
                Assert.Contains("\"precision\": \"fp32-fast\"", report);
                Assert.Contains("ours fp32-fast", report);
                Assert.Contains("ours composed fp32-fast", report);
                Assert.Contains("ours fused fp32-fast", report);
                Assert.DoesNotContain("\"ours fused\"", report);
            }
        }
        finally
        {
            File.Delete(json);
        }

        if (PrecisionPolicy.WhyNot(gpu.Device, Precision.Bf16) is { } why)
        {
            (code, err) = Run("bench", "gemm", "--sizes", "8", "--precision", "bf16");
            Assert.Equal(2, code);
            Assert.Contains($"--precision bf16: {why}", err);
        }
        else
        {
            // Where bf16's products run on f16 tensor cores, the run line says so.
            (code, err) = Run("bench", "gemm", "--sizes", "8", "--warmup", "0", "--repeats", "1", "--precision", "bf16");
            Assert.Equal(0, code);
            var line = err.Split('\n').First(l => l.StartsWith("precision", StringComparison.Ordinal));
            Assert.Equal(Precision.Bf16.Operands(gpu.Device) == GemmOperands.Bf16ViaF16
                ? "precision: bf16 (bf16 values multiplied as scaled f16: this device has no bf16 cooperative matrices)"
                : "precision: bf16", line);
        }
    }

    /// <summary>`bench gemm --out bf16`: a bf16 C from tensor-core KHR products, refused by reason with exit code 2 elsewhere.</summary>
    [Fact]
    public void BenchGemmWritesBf16OnTensorCoresOnly()
    {
        var (code, err) = Run("bench", "gemm", "--sizes", "8", "--precision", "fp32", "--out", "bf16");
        Assert.Equal(2, code);
        Assert.Contains("--out bf16: only tensor-core KHR products write a bf16 C; fp32 products write fp32", err);
        (code, err) = Run("bench", "gemm", "--sizes", "8", "--operands", "f16", "--api", "nvcooperativematrix2", "--out", "bf16");
        Assert.Equal(2, code);
        Assert.Contains("the coopmat2 variant writes fp32", err);
        if (PrecisionPolicy.WhyNot(gpu.Device, Precision.Bf16) is not null)
        {
            return;   // TheRunsPrecisionComesFirstAndBadOnesExitWithTwo holds a refused bf16 to its reason
        }

        (code, err, var output) = RunWithOutput("bench", "gemm", "--sizes", "40x24x16", "--warmup", "0", "--repeats", "1", "--precision", "bf16", "--trans-b", "--out", "bf16");
        var writes = TensorCoreGemm.WritesBf16(gpu.Device, Precision.Bf16.Operands(gpu.Device));
        Assert.True(code == (writes ? 0 : 2), err);
        Assert.Contains(writes ? "GEMM, bf16 C" : "--out bf16", writes ? output : err);
    }

    /// <summary>`bench train --bf16-activations` (and train's): a bf16 model's memory saver, refused outside bf16 with exit code 2.</summary>
    [Fact]
    public void Bf16ActivationsAreKeptInBf16Only()
    {
        string[] tiny = ["--layers", "1", "--d-model", "32", "--vocab", "40", "--batch", "1", "--seqlen", "24", "--dstate", "8", "--headdim", "16", "--chunk", "16",
            "--bf16-activations"];
        var (code, err) = Run(["bench", "train", .. tiny, "--warmup", "1", "--repeats", "1", "--precision", "fp32"]);
        Assert.Equal(2, code);
        Assert.Contains("--bf16-activations: bf16 activations are kept in --precision bf16, not fp32", err);
        var runDir = Path.Combine(Path.GetTempPath(), $"bf16-acts-{Guid.NewGuid():N}");
        var leftBehind = false;
        try
        {
            (code, err) = Run(["train", "--task", "selective-copy", "--steps", "1", "--out", runDir, "--precision", "fp32", "--bf16-activations"]);
        }
        finally
        {
            leftBehind = Directory.Exists(runDir);
            if (leftBehind)
            {
                Directory.Delete(runDir, recursive: true);
            }
        }

        Assert.Equal(2, code);
        Assert.Contains("--bf16-activations: bf16 activations are kept in --precision bf16, not fp32", err);
        Assert.False(leftBehind, "a refused train created its --out directory");
        if (Bf16TensorsRefused())
        {
            return;
        }

        (code, err, var output) = RunWithOutput(["bench", "train", .. tiny, "--warmup", "1", "--repeats", "1", "--precision", "bf16"]);
        Assert.True(code == 0, err);
        Assert.Contains("bf16 (activations bf16)", output);
    }

    /// <summary>`bench ssd --dtype bf16`: bf16 tensors in precision bf16, refused in any other with exit code 2.</summary>
    [Fact]
    public void BenchSsdTakesBf16TensorsInBf16Only()
    {
        string[] shape = ["bench", "ssd", "--batch", "1", "--seqlen", "40", "--heads", "2", "--headdim", "8", "--dstate", "8", "--chunk", "16",
            "--backward", "--warmup", "0", "--repeats", "1", "--dtype", "bf16"];
        var (code, err) = Run([.. shape, "--precision", "fp32"]);
        Assert.Equal(2, code);
        Assert.Contains("--dtype bf16: bf16 tensors run in --precision bf16, not fp32", err);
        string[] suite = ["bench", "--preset", "quick", "--ops", "ssd,bidir,naive", "--warmup", "0", "--repeats", "1", "--dtype", "bf16"];
        (code, err) = Run([.. suite, "--precision", "fp32"]);
        Assert.Equal(2, code);
        Assert.Contains("--dtype bf16: bf16 tensors run in --precision bf16, not fp32", err);
        if (Bf16TensorsRefused())
        {
            return;
        }

        foreach (var direction in new[] { "causal", "sum" })
        {
            (code, err, var output) = RunWithOutput([.. shape, "--precision", "bf16", "--direction", direction]);
            Assert.True(code == 0, err);
            Assert.Contains("bf16 on bf16 tensors", output);
        }

        // The suite's SSD rows on bf16 tensors, labelled so; the naive composition (fp32 flips) left out.
        var json = Path.Combine(Path.GetTempPath(), $"suite-bf16-{Guid.NewGuid():N}.json");
        try
        {
            (code, err) = Run([.. suite, "--precision", "bf16", "--json", json]);
            Assert.True(code == 0, err);
            using var report = System.Text.Json.JsonDocument.Parse(File.ReadAllText(json));
            var impls = report.RootElement.GetProperty("rows").EnumerateArray().Select(row => row.GetProperty("impl").GetString()!).ToList();
            Assert.NotEmpty(impls);
            Assert.All(impls, impl => Assert.EndsWith("bf16 on bf16 tensors", impl));
            Assert.DoesNotContain(impls, impl => impl.StartsWith("naive", StringComparison.Ordinal));
        }
        finally
        {
            File.Delete(json);
        }
    }
}
