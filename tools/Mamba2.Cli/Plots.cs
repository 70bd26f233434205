namespace Mamba2.Cli;

/// <summary>PNG plots (ScottPlot, headless).</summary>
internal static class Plots
{
    /// <summary>Loss of the training steps and evaluations, and the evaluation accuracy (right axis) against the step.</summary>
    public static void Curves(IReadOnlyList<MetricsRow> rows, string path, bool text)
    {
        var plot = new ScottPlot.Plot();
        foreach (var split in new[] { "train", "eval" })
        {
            var points = rows.Where(r => r.Split == split).ToArray();
            if (points.Length == 0)
            {
                continue;
            }

            var loss = plot.Add.Scatter(points.Select(p => (double)p.Step).ToArray(), points.Select(p => p.Loss).ToArray());
            loss.LegendText = $"{split} loss";
            loss.MarkerSize = split == "eval" ? 5 : 0;
            if (split == "eval" && !text)
            {
                var acc = plot.Add.Scatter(points.Select(p => (double)p.Step).ToArray(), points.Select(p => p.Accuracy).ToArray());
                acc.LegendText = "eval accuracy";
                acc.Axes.YAxis = plot.Axes.Right;
                plot.Axes.Right.Label.Text = "accuracy";
            }
        }

        plot.Axes.Bottom.Label.Text = "step";
        plot.Axes.Left.Label.Text = "loss";
        plot.ShowLegend(ScottPlot.Edge.Bottom);   // outside the data area: inside, it covered the ends of the curves
        plot.SavePng(path, 900, 500);
    }
}
