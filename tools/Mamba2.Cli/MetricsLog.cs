using System.Globalization;
using Mamba2.Model.Training;

namespace Mamba2.Cli;

/// <summary>One row per train step and evaluation, appended to a CSV as the run goes (flushed each row).</summary>
internal sealed class MetricsLog : IDisposable
{
    private readonly StreamWriter _writer;

    public MetricsLog(string path, bool append)
    {
        var exists = append && File.Exists(path);
        if (exists)
        {
            foreach (var line in File.ReadLines(path).Skip(1))
            {
                var f = line.Split(',');
                Rows.Add(new MetricsRow(f[0], long.Parse(f[1], CultureInfo.InvariantCulture), double.Parse(f[2], CultureInfo.InvariantCulture),
                    double.Parse(f[3], CultureInfo.InvariantCulture)));
            }
        }

        _writer = new StreamWriter(path, exists) { AutoFlush = true };
        if (!exists)
        {
            _writer.WriteLine("split,step,loss,accuracy,lr,tokens_per_s,seconds");
        }
    }

    public List<MetricsRow> Rows { get; } = [];

    public void Add(string split, StepMetrics m, double tokensPerSecond, double seconds)
    {
        Rows.Add(new MetricsRow(split, m.Step, m.Loss, m.Accuracy));
        _writer.WriteLine(string.Create(CultureInfo.InvariantCulture, $"{split},{m.Step},{m.Loss:R},{m.Accuracy:R},{m.LearningRate:R},{tokensPerSecond:F1},{seconds:F2}"));
    }

    public void Dispose() => _writer.Dispose();
}

internal sealed record MetricsRow(string Split, long Step, double Loss, double Accuracy);
