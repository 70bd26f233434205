using System.CommandLine;
using Mamba2.Model.Ops.Ssd;
using Mamba2.Model.Tensors;
using Spectre.Console;

namespace Mamba2.Cli;

/// <summary><c>mamba2 bench ssd</c>: the causal SSD forward at a given shape, GPU-timestamped.</summary>
internal static class SsdBenchCommand
{
    private static readonly Option<int> Batch = new("--batch") { DefaultValueFactory = _ => 8, Description = "b" };
    private static readonly Option<int> SeqLen = new("--seqlen") { DefaultValueFactory = _ => 2048, Description = "L" };
    private static readonly Option<int> Heads = new("--heads") { DefaultValueFactory = _ => 32, Description = "h" };
    private static readonly Option<int> HeadDim = new("--headdim") { DefaultValueFactory = _ => 64, Description = "p" };
    private static readonly Option<int> Groups = new("--groups") { DefaultValueFactory = _ => 1, Description = "g" };
    private static readonly Option<int> DState = new("--dstate") { DefaultValueFactory = _ => 128, Description = "n" };
    private static readonly Option<int> Chunk = new("--chunk") { DefaultValueFactory = _ => 256, Description = "chunk size Q" };
    private static readonly Option<int> Warmup = new("--warmup") { DefaultValueFactory = _ => 3, Description = "Untimed runs first" };
    private static readonly Option<int> Repeats = new("--repeats") { DefaultValueFactory = _ => 20, Description = "Timed runs (median reported)" };

    public static Command Create()
    {
        var cmd = new Command("ssd", "Causal SSD forward (defaults: the 370m layer shape b8 L2048 h32 p64 g1 n128 chunk 256), with D, z, dt_bias and softplus");
        foreach (var o in new Option[] { CommonOptions.Device, CommonOptions.Validation, Batch, SeqLen, Heads, HeadDim, Groups, DState, Chunk, Warmup, Repeats })
        {
            cmd.Options.Add(o);
        }

        cmd.SetAction(Run);
        return cmd;
    }

    private static int Run(ParseResult r)
    {
        int b = r.GetValue(Batch), l = r.GetValue(SeqLen), h = r.GetValue(Heads), p = r.GetValue(HeadDim);
        int g = r.GetValue(Groups), n = r.GetValue(DState), q = r.GetValue(Chunk);
        using var device = CommonOptions.Open(r);
        var rng = new Random();
        float[] R(long count, double lo, double hi) => BenchInputs.Uniform(rng, count, lo, hi);
        using var x = Tensor.FromArray(device, "x", R((long)b * l * h * p, -1, 1), b, l, h, p);
        using var z = Tensor.FromArray(device, "z", R((long)b * l * h * p, -1, 1), b, l, h, p);
        using var dt = Tensor.FromArray(device, "dt", R((long)b * l * h, -3, 0), b, l, h);
        using var a = Tensor.FromArray(device, "A", R(h, -8, -1), h);
        using var bm = Tensor.FromArray(device, "B", R((long)b * l * g * n, -1, 1), b, l, g, n);
        using var cm = Tensor.FromArray(device, "C", R((long)b * l * g * n, -1, 1), b, l, g, n);
        using var d = Tensor.FromArray(device, "D", R(h, 0, 1), h);
        using var bias = Tensor.FromArray(device, "dt_bias", R(h, -2, 0), h);
        var options = new SsdOptions { ChunkSize = q, D = d, Z = z, DtBias = bias, DtSoftplus = true };

        var before = device.Memory.AllocatedBytes;
        device.Memory.ResetPeak();
        var results = new List<SsdResult>();
        var stats = GpuTiming.Measure(device, s => results.Add(SsdOp.Forward(x, dt, a, bm, cm, options, s)), r.GetValue(Warmup), r.GetValue(Repeats));
        var perCall = (device.Memory.PeakAllocatedBytes - before) / (ulong)results.Count;
        foreach (var res in results)
        {
            res.Dispose();
        }

        var tokens = (double)b * l;
        var bytes = 4.0 * tokens * (3.0 * h * p + h + 2.0 * g * n);   // read x, z, dt, B, C; write y
        var macs = tokens * h * (q * p / 2.0 + 2.0 * n * p + q * n / (2.0 * (h / g)));
        var table = new Table().AddColumns("shape", "median ms", "min ms", "max ms", "GB/s", "TFLOP/s", "memory per call");
        table.AddRow($"b{b} L{l} h{h} p{p} g{g} n{n} Q{q}", $"{stats.MedianMs:F4}", $"{stats.MinMs:F4}", $"{stats.MaxMs:F4}",
            $"{bytes / stats.MedianMs / 1e6:F1}", $"{2 * macs / stats.MedianMs / 1e9:F2}", $"{perCall / 1048576.0:F1} MiB");
        Console.WriteLine($"device: {device.Name}; SSD forward fp32 with D, z, dt_bias, softplus; {bytes / 1e6:F1} MB moved at least, {2 * macs / 1e9:F2} GFLOP");
        AnsiConsole.Write(table);

        // Per-stage breakdown: one more run with a barrier and a timestamp after each stage.
        using (var s = device.BeginStream())
        {
            using var profiled = SsdOp.Forward(x, dt, a, bm, cm, options, s, profilePrefix: "");
            var t = s.Submit();
            var prev = "start";
            Console.WriteLine(string.Join("  ", SsdOp.Stages.Select(stage =>
            {
                var ms = t.Milliseconds(prev, stage);
                prev = stage;
                return $"{stage} {ms:F4} ms";
            })));
        }

        return 0;
    }
}
