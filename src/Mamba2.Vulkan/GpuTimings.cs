namespace Mamba2.Vulkan;

/// <summary>GPU timestamps of one submission, in nanoseconds from an arbitrary origin.</summary>
public sealed record GpuTimings(IReadOnlyList<string> Labels, IReadOnlyList<double> Nanoseconds)
{
    /// <summary>What labels a command's timestamp (<see cref="CommandStream.ProfilingCommands"/>) before its kernel's name.</summary>
    public const string CommandMark = "#";

    public double Milliseconds(string from, string to) => (At(to) - At(from)) / 1e6;

    /// <summary>
    /// Milliseconds by label, each interval between consecutive timestamps attributed to the label at its end (the
    /// attribution <see cref="CommandStream.Section"/> marks are made for), in order of first appearance; the
    /// intervals ending at a command's timestamp go to the section mark after them.
    /// With <paramref name="depth"/>, nested labels ("ssd/chunk_scan") are cut to their first depth names ("ssd").
    /// </summary>
    public IReadOnlyList<(string Name, double Milliseconds)> Sections(int depth = int.MaxValue)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(depth, 1);
        var totals = new List<(string Name, double Milliseconds)>();
        var pending = 0.0;
        for (var i = 1; i < Labels.Count; i++)
        {
            var ms = Interval(i);
            if (IsCommand(Labels[i]))
            {
                pending += ms;
                continue;
            }

            Add(totals, Cut(Labels[i], depth), pending + ms);
            pending = 0;
        }

        return totals;
    }

    /// <summary>
    /// The commands' time (<see cref="CommandStream.ProfilingCommands"/>): for each section (the next section mark's
    /// label, cut to <paramref name="depth"/> names; empty after the last mark) and kernel, how many ran and the
    /// milliseconds up to their timestamps, in order of first appearance. What a section mark's own interval holds
    /// (a barrier) is in <see cref="Sections"/> only.
    /// </summary>
    public IReadOnlyList<CommandTime> Commands(int depth = int.MaxValue)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(depth, 1);
        var result = new List<CommandTime>();
        var open = new List<(string Kernel, double Milliseconds)>();
        void Close(string section)
        {
            foreach (var (kernel, ms) in open)
            {
                var at = result.FindIndex(c => c.Section == section && c.Kernel == kernel);
                if (at < 0)
                {
                    result.Add(new CommandTime(section, kernel, 1, ms));
                }
                else
                {
                    result[at] = result[at] with { Calls = result[at].Calls + 1, Milliseconds = result[at].Milliseconds + ms };
                }
            }

            open.Clear();
        }

        for (var i = 1; i < Labels.Count; i++)
        {
            if (IsCommand(Labels[i]))
            {
                open.Add((Labels[i][CommandMark.Length..], Interval(i)));
            }
            else
            {
                Close(Cut(Labels[i], depth));
            }
        }

        Close("");
        return result;
    }

    private static bool IsCommand(string label) => label.StartsWith(CommandMark, StringComparison.Ordinal);

    private double Interval(int i) => (Nanoseconds[i] - Nanoseconds[i - 1]) / 1e6;

    private static string Cut(string label, int depth)
    {
        var parts = label.Split('/');
        return parts.Length <= depth ? label : string.Join('/', parts[..depth]);
    }

    private static void Add(List<(string Name, double Milliseconds)> totals, string name, double ms)
    {
        var at = totals.FindIndex(t => t.Name == name);
        if (at < 0)
        {
            totals.Add((name, ms));
        }
        else
        {
            totals[at] = (name, totals[at].Milliseconds + ms);
        }
    }

    private double At(string label)
    {
        var i = Labels.ToList().IndexOf(label);
        return i >= 0 ? Nanoseconds[i] : throw new KeyNotFoundException($"No timestamp labelled '{label}'.");
    }
}

/// <summary>The commands of one kernel in one section of a profiled submission: how many ran, their milliseconds.</summary>
public sealed record CommandTime(string Section, string Kernel, int Calls, double Milliseconds);
