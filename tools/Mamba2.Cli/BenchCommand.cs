using System.CommandLine;
using Mamba2.Model.Ops;
using Mamba2.Model.Tensors;
using Mamba2.Vulkan;
using Spectre.Console;

namespace Mamba2.Cli;

/// <summary><c>mamba2 bench</c>: GPU-timestamped benchmarks of the kernels.</summary>
internal static class BenchCommand
{
    private static readonly Option<string> Sizes = new("--sizes")
    {
        Description = "Comma-separated problem sizes: N for N x N x N, or MxNxK",
        DefaultValueFactory = _ => "512,1024,2048",
    };

    private static readonly Option<int> Warmup = new("--warmup") { Description = "Untimed runs first", DefaultValueFactory = _ => 3 };
    private static readonly Option<int> Repeats = new("--repeats") { Description = "Timed runs (median reported)", DefaultValueFactory = _ => 20 };
    private static readonly Option<bool> TransA = new("--trans-a") { Description = "Use A transposed (A stored K x M)" };
    private static readonly Option<bool> TransB = new("--trans-b") { Description = "Use B transposed (B stored N x K)" };
    private static readonly Option<string> Tile = new("--tile")
    {
        Description = "Tile: auto, large (128x128, 8x8 per thread), small (64x64, 4x4), BMxBNxBK/TMxTN (shared-memory kernel), lanes (the CPU kernel's default) or lanes:BMxBN",
        DefaultValueFactory = _ => "auto",
    };

    private static readonly Option<GemmOperands> Operands = new("--operands")
    {
        HelpName = "fp32|f16|bf16",
        Description = "Operand type of the products: fp32 (exact, shader cores), f16 or bf16 (tensor cores, fp32 accumulation)",
        DefaultValueFactory = _ => GemmOperands.Fp32,
    };

    private static readonly Option<TensorCoreApi> Api = new("--api")
    {
        HelpName = "auto|khr|nvcooperativematrix2",
        Description = "Tensor-core variant for f16/bf16: auto, khr (VK_KHR_cooperative_matrix) or nvcooperativematrix2",
        DefaultValueFactory = _ => TensorCoreApi.Auto,
    };

    private static readonly Option<OperandStaging> Staging = new("--staging")
    {
        HelpName = "auto|inkernel|converted",
        Description = "Where fp32 operands become f16/bf16: auto, inkernel (as the GEMM stages them) or converted (a pass writes 16-bit copies first; timed with the GEMM)",
        DefaultValueFactory = _ => OperandStaging.Auto,
    };

    private static readonly Option<string> Out = CommonOptions.DTypeOption(
        "C's type: f32, or bf16 (each element rounded once as it is stored; tensor-core KHR products, as a bf16 model's in_proj writes)", "--out");

    private static readonly Option<string?> TensorTile = new("--tc-tile")
    {
        Description = "Tensor-core tile: BMxBNxBK/WMxWN (KHR; fragments of the device's shape) or BMxBNxBK (coopmat2), then /BUFFERS (1: one shared buffer instead of two); default chosen per device",
    };

    public static Command Create()
    {
        var bench = new Command("bench", "Benchmark with GPU timestamps (warm-up, median of many runs): with no verb, the suite of a preset (SSD causal and bidirectional, the naive composition, the layer, GEMM) against measured device ceilings");
        SuiteCommand.AddTo(bench);
        var gemm = CommonOptions.GpuCommand("gemm", "GEMM C = A B (fp32, or f16/bf16 operands on tensor cores): time, GFLOP/s and GB/s per size", RunGemm,
            Sizes, Warmup, Repeats, TransA, TransB, Tile, Operands, Api, Staging, TensorTile, Out);
        bench.Subcommands.Add(gemm);
        bench.Subcommands.Add(SsdBenchCommand.Create());
        bench.Subcommands.Add(TrainStepBenchCommand.Create());
        bench.Subcommands.Add(TensorCoreBenchCommand.Create());
        bench.Subcommands.Add(SharedMemoryBenchCommand.Create());
        return bench;
    }

    private static int RunGemm(ParseResult result)
    {
        var shapes = ParseSizes(result.GetValue(Sizes)!);
        var warmup = result.GetValue(Warmup);
        var repeats = result.GetValue(Repeats);
        CommonOptions.CheckRuns(warmup, repeats);

        var ta = result.GetValue(TransA);
        var tb = result.GetValue(TransB);
        using var device = CommonOptions.Open(result);
        DeviceCeilings.SpinUp(device);
        var tileText = result.GetValue(Tile)!;
        GemmTile? fixedTile = tileText switch
        {
            "auto" or "lanes" => null,
            "large" => Gemm.Large,
            "small" => Gemm.Small,
            var t => ParseTile(t),
        };
        GemmTile Choose(int m, int n) => fixedTile ?? (tileText == "lanes" ? Gemm.LanesTile(device, n) : Gemm.ChooseTile(device, m, n));
        // --operands (with --staging) is the low-level knob; otherwise the precision policy picks them.
        var operands = result.GetValue(Operands);
        var staged = result.GetValue(Staging);
        var explicitOperands = result.GetResult(Operands) is { Implicit: false };
        if (explicitOperands && result.GetValue(CommonOptions.PrecisionOption) is not null)
        {
            Console.Error.WriteLine("error: give --precision or --operands, not both");
            return 2;
        }

        if (!explicitOperands)
        {
            if (CommonOptions.ResolvePrecision(result, device) is not { } precision)
            {
                return 2;
            }

            (operands, var policyStaging) = PrecisionPolicy.GemmOf(precision, device);
            staged = staged == OperandStaging.Auto ? policyStaging : staged;
        }

        var api = result.GetValue(Api);
        var outBf16 = result.GetValue(Out) == "bf16";
        var whyNotBf16 = !outBf16 ? null
            : operands == GemmOperands.Fp32 ? "fp32 products write fp32 (take --precision bf16 or fp32-fast)"
            : api == TensorCoreApi.NvCooperativeMatrix2 ? "the coopmat2 variant writes fp32 (take --api khr or auto)"
            : !TensorCoreGemm.WritesBf16(device, operands) ? $"{device.Name} or this build has no KHR {operands} product that writes one"
            : null;
        if (whyNotBf16 is not null)
        {
            Console.Error.WriteLine($"error: --out bf16: only tensor-core KHR products write a bf16 C; {whyNotBf16}");
            return 2;
        }

        if (operands != GemmOperands.Fp32 && !TensorCoreGemm.IsAvailable(device, operands, api))
        {
            Console.Error.WriteLine($"error: --operands {operands}: {string.Join("; ", TensorCoreGemm.Describe(device.Capabilities))}");
            return 2;
        }

        if (operands == GemmOperands.Fp32
            && new Option[] { Api, Staging, TensorTile }.FirstOrDefault(o => result.GetResult(o) is { Implicit: false }) is { } tensorOnly)
        {
            throw new ArgumentException(
                $"{tensorOnly.Name} applies to tensor-core products; these run in fp32 (take --operands f16|bf16, or --precision fp32-fast|bf16).");
        }

        var resolved = operands == GemmOperands.Fp32 ? api : outBf16 ? TensorCoreApi.Khr : TensorCoreGemm.Resolve(device.Capabilities, operands, api)!.Value;
        var staging = operands == GemmOperands.Fp32 ? OperandStaging.InKernel : TensorCoreGemm.ResolveStaging(device, operands, resolved, staged);
        TensorCoreTile? TensorTileFor(int m, int n) => result.GetValue(TensorTile) is { } text
            ? ParsedTile(text) with { Staging = staging }
            : TensorCoreGemm.ChooseTile(device.Capabilities, operands, resolved, m, n, staging);
        TensorCoreTile ParsedTile(string text)
        {
            try
            {
                return TensorCoreGemm.ParseTile(device.Capabilities, operands, resolved, text);
            }
            catch (ArgumentException e)
            {
                throw new ArgumentException($"--tc-tile: {e.Message}");
            }
        }

        Console.WriteLine($"device: {device.Name} ({device.Info.DriverName}), {operands} GEMM{(outBf16 ? ", bf16 C" : "")}, {warmup} warm-up + {repeats} timed runs");
        var table = new Table().AddColumns("M", "N", "K", "tile", "median ms", "min ms", "max ms", "GFLOP/s", "GB/s");
        var rng = new Random();
        foreach (var (m, n, k) in shapes)
        {
            using var a = Tensor.FromArray(device, "A", BenchInputs.Uniform(rng, (long)m * k, -1, 1), ta ? [k, m] : [m, k]);
            using var b = Tensor.FromArray(device, "B", BenchInputs.Uniform(rng, (long)k * n, -1, 1), tb ? [n, k] : [k, n]);
            using var c = Tensor.Empty(device, "C", outBf16 ? TensorDType.BF16 : TensorDType.F32, m, n);
            var chosen = operands == GemmOperands.Fp32 ? Choose(m, n) : (GemmTile?)null;
            var tensorTile = operands == GemmOperands.Fp32 ? null : TensorTileFor(m, n);
            var stats = GpuTiming.Measure(device,
                s => Gemm.Run(a, b, c, ta, tb, stream: s, tile: chosen, operands: operands, api: resolved, tensorTile: tensorTile), warmup, repeats);
            var flops = 2.0 * m * n * k;
            var bytes = 4.0 * ((double)m * k + (double)k * n) + (outBf16 ? 2.0 : 4.0) * m * n;
            var split = chosen is { } fp32Tile && Gemm.Fp32Splits(device, fp32Tile, m, n, k) is > 1 and var parts ? $", split K {parts}" : "";
            table.AddRow($"{m}", $"{n}", $"{k}", $"{(object?)chosen ?? tensorTile}{split}", $"{stats.MedianMs:F4}", $"{stats.MinMs:F4}", $"{stats.MaxMs:F4}",
                $"{flops / stats.MedianMs / 1e6:F1}", $"{bytes / stats.MedianMs / 1e6:F1}");
        }

        AnsiConsole.Write(table);
        KernelStatisticsReport.Print(device);
        return 0;
    }

    private static List<(int M, int N, int K)> ParseSizes(string text)
    {
        var list = new List<(int, int, int)>();
        foreach (var part in CommonOptions.SplitList("--sizes", text))
        {
            var dims = part.Split('x').Select(d => int.TryParse(d, out var v) && v > 0 ? v
                : throw new ArgumentException($"--sizes: '{part}' needs positive whole numbers, N or MxNxK")).ToArray();
            var (m, n, k) = dims.Length switch
            {
                1 => (dims[0], dims[0], dims[0]),
                3 => (dims[0], dims[1], dims[2]),
                _ => throw new ArgumentException($"--sizes: '{part}' is neither N nor MxNxK"),
            };
            if (Math.Max((long)m * k, Math.Max((long)k * n, (long)m * n)) > int.MaxValue)
            {
                throw new ArgumentException($"--sizes: '{part}' has a matrix of more than {int.MaxValue} elements");
            }

            list.Add((m, n, k));
        }

        return list;
    }

    private static GemmTile ParseTile(string text)
    {
        if (text.StartsWith("lanes:", StringComparison.Ordinal))
        {
            var d = text["lanes:".Length..].Split('x');
            if (d.Length != 2 || !d.All(p => uint.TryParse(p, out _)))
            {
                throw new ArgumentException($"--tile lanes:BMxBN expected, got '{text}'");
            }

            return GemmTile.Lanes(uint.Parse(d[0]), uint.Parse(d[1]));
        }

        var parts = text.Split('/', 'x');
        if (parts.Length != 5 || !parts.All(p => uint.TryParse(p, out _)))
        {
            throw new ArgumentException($"--tile must be auto, large, small, lanes, lanes:BMxBN or BMxBNxBK/TMxTN, got '{text}'");
        }

        var v = parts.Select(uint.Parse).ToArray();
        return new GemmTile(v[0], v[1], v[2], v[3], v[4]);
    }
}
