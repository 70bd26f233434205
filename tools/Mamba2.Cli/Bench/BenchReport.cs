using System.Globalization;
using System.Text;
using System.Text.Json;
using Mamba2.Model.Ops;
using Mamba2.Vulkan;

namespace Mamba2.Cli;

/// <summary>A `bench` run: the device, its measured ceilings and the rows; written as JSON, CSV or a plot, compared with an earlier run.</summary>
internal sealed record BenchReport(string Device, string Driver, string Preset, DeviceCeilings Ceilings, IReadOnlyList<BenchRow> Rows,
    Precision Precision = Precision.Fp32)
{
    private static readonly string[] CsvColumns =
        ["op", "impl", "pass", "shape", "batch", "seqlen", "heads", "headdim", "groups", "dstate", "chunk", "median_ms", "min_ms", "max_ms",
         "gb_per_s", "tflop_per_s", "pct_bandwidth", "pct_fp32", "peak_memory_mib", "x_causal_time", "x_causal_memory"];

    /// <summary>
    /// A bidirectional or naive row's median time and peak memory over those of the causal row of its family (the
    /// SSD or the layer), pass and shape: the ratios the bidirectional goal is stated in. Null for causal rows,
    /// other ops, or when the preset's ops left the causal row out.
    /// </summary>
    public (double Time, double? Memory)? AgainstCausal(BenchRow r)
    {
        var causalOp = r.Op.StartsWith("ssd ", StringComparison.Ordinal) ? "ssd causal"
            : r.Op.StartsWith("mamba2 layer", StringComparison.Ordinal) ? "mamba2 layer" : null;
        if (causalOp is null || r.Op == causalOp)
        {
            return null;
        }

        var causal = Rows.FirstOrDefault(c => c.Op == causalOp && c.Pass == r.Pass && c.Shape == r.Shape);
        return causal is null ? null : (r.MedianMs / causal.MedianMs, causal.PeakMemoryBytes > 0 ? r.PeakMemoryBytes / causal.PeakMemoryBytes : null);
    }

    /// <summary>A row as JSON, with its ratios to the causal row where it has them.</summary>
    private Dictionary<string, object> RowJson(BenchRow r)
    {
        var j = r.ToJson(Ceilings);
        if (AgainstCausal(r) is { } x)
        {
            j["x_causal_time"] = x.Time;
            if (x.Memory is { } m)
            {
                j["x_causal_memory"] = m;
            }
        }

        return j;
    }

    public void WriteJson(string path)
    {
        var doc = new Dictionary<string, object>
        {
            ["device"] = Device,
            ["driver"] = Driver,
            ["date"] = DateTime.UtcNow.ToString("yyyy-MM-dd HH:mm 'UTC'", CultureInfo.InvariantCulture),
            ["preset"] = Preset,
            ["precision"] = Precision.Name(),
            ["ceilings"] = new Dictionary<string, object?>
            {
                ["copy_gb_per_s"] = Ceilings.CopyGBps,
                ["fp32_tflop_per_s"] = Ceilings.Fp32Tflops,
                ["f16_tensor_tflop_per_s"] = Ceilings.F16TensorTflops,
                ["bf16_tensor_tflop_per_s"] = Ceilings.Bf16TensorTflops,
            },
            ["rows"] = Rows.Select(RowJson).ToList(),
        };
        File.WriteAllText(path, JsonSerializer.Serialize(doc, new JsonSerializerOptions { WriteIndented = true }));
    }

    public void WriteCsv(string path)
    {
        var sb = new StringBuilder().AppendLine(string.Join(',', CsvColumns));
        foreach (var r in Rows)
        {
            var j = RowJson(r);
            sb.AppendLine(string.Join(',', CsvColumns.Select(c => j.GetValueOrDefault(c, "") switch
            {
                double d => d.ToString("G6", CultureInfo.InvariantCulture),
                string s => s.Contains(',') ? $"\"{s}\"" : s,
                var o => Convert.ToString(o, CultureInfo.InvariantCulture),
            })));
        }

        File.WriteAllText(path, sb.ToString());
    }

    /// <summary>Median ms by row key (op | impl | pass | shape) of a JSON report written by <see cref="WriteJson"/>.</summary>
    public static Dictionary<string, double> ReadMedians(string path)
    {
        try
        {
            using var doc = JsonDocument.Parse(File.ReadAllText(path));
            if (doc.RootElement.ValueKind != JsonValueKind.Object || !doc.RootElement.TryGetProperty("rows", out var rows) || rows.ValueKind != JsonValueKind.Array)
            {
                throw new InvalidDataException($"{path}: not a bench report (no 'rows' list).");
            }

            return rows.EnumerateArray().ToDictionary(
                r => $"{r.GetProperty("op").GetString()} | {r.GetProperty("impl").GetString()} | {r.GetProperty("pass").GetString()} | {r.GetProperty("shape").GetString()}",
                r => r.GetProperty("median_ms").GetDouble());
        }
        catch (Exception e) when (e is JsonException or InvalidOperationException or KeyNotFoundException or ArgumentException)
        {
            throw new InvalidDataException($"{path}: not a bench report written by --json ({e.Message})", e);
        }
    }

    /// <summary>Time against seqlen (log-log), one line per op, implementation and pass.</summary>
    public void Plot(string path)
    {
        var plot = new ScottPlot.Plot();
        foreach (var series in Rows.GroupBy(r => $"{r.Op}, {r.Impl}, {r.Pass}"))
        {
            var points = series.OrderBy(r => r.Shape.SeqLen).ToArray();
            var line = plot.Add.Scatter(points.Select(r => Math.Log2(r.Shape.SeqLen)).ToArray(), points.Select(r => Math.Log10(r.MedianMs)).ToArray());
            line.LegendText = series.Key;
        }

        var lengths = Rows.Select(r => r.Shape.SeqLen).Distinct().Order().ToArray();
        plot.Axes.Bottom.SetTicks([.. lengths.Select(l => Math.Log2(l))], [.. lengths.Select(l => l.ToString(CultureInfo.InvariantCulture))]);
        var decades = Enumerable.Range(-4, 9).Select(e => (double)e).ToArray();
        plot.Axes.Left.SetTicks(decades, [.. decades.Select(e => Math.Pow(10, e).ToString("G", CultureInfo.InvariantCulture))]);
        plot.Axes.Bottom.Label.Text = "sequence length";
        plot.Axes.Left.Label.Text = "GPU time, ms (log)";
        plot.Title($"{Device}: preset {Preset}");
        plot.ShowLegend();
        plot.SavePng(path, 1100, 650);
    }
}
