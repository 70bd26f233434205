using System.Globalization;
using Mamba2.Model.Training;

namespace Mamba2.Cli;

/// <summary>One row per train step and evaluation, appended to a CSV as the run goes (flushed each row).</summary>
internal sealed class MetricsLog : IDisposable
{
    private readonly StreamWriter _writer;

    /// <summary>
    /// A new log at <paramref name="path"/>, or with <paramref name="resumeStep"/> the existing one cut back to the
    /// rows of steps up to it (a resumed run continues from there; a cut last line, left by a killed process, is
    /// dropped), rewritten durably before new rows are appended.
    /// </summary>
    public MetricsLog(string path, long? resumeStep)
    {
        var exists = resumeStep is not null && File.Exists(path);
        if (exists)
        {
            var lines = File.ReadAllLines(path);
            var kept = new List<string> { Header };
            for (var i = 1; i < lines.Length; i++)
            {
                if (!TryParse(lines[i], out var row))
                {
                    if (i == lines.Length - 1)
                    {
                        break;   // the row a killed run was writing
                    }

                    throw new InvalidDataException($"{path}: line {i + 1} is not a metrics row ({Header}): '{lines[i]}'.");
                }

                if (row.Step <= resumeStep)
                {
                    Rows.Add(row);
                    kept.Add(lines[i]);
                }
            }

            Mamba2.Model.IO.DurableFiles.WriteAllText(path, string.Join('\n', kept) + "\n");
        }

        _writer = new StreamWriter(path, exists) { AutoFlush = true };
        if (!exists)
        {
            _writer.WriteLine(Header);
        }
    }

    private const string Header = "split,step,loss,accuracy,lr,tokens_per_s,seconds";

    private static bool TryParse(string line, out MetricsRow row)
    {
        var f = line.Split(',');
        row = null!;
        if (f.Length != 7 || !long.TryParse(f[1], NumberStyles.Integer, CultureInfo.InvariantCulture, out var step)
            || !double.TryParse(f[2], NumberStyles.Float, CultureInfo.InvariantCulture, out var loss)
            || !double.TryParse(f[3], NumberStyles.Float, CultureInfo.InvariantCulture, out var accuracy)
            || !double.TryParse(f[6], NumberStyles.Float, CultureInfo.InvariantCulture, out _))
        {
            return false;
        }

        row = new MetricsRow(f[0], step, loss, accuracy);
        return true;
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
