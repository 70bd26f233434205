namespace Mamba2.Vulkan;

/// <summary>One stream's work on the device's clock: from the end of its opening barrier (the work launched before
/// it done) to the end of its last command.</summary>
public readonly record struct StreamSpan(string Label, double BeginNs, double EndNs)
{
    public double Milliseconds => (EndNs - BeginNs) / 1e6;
}

/// <summary>
/// The device-side span of every stream that completes while this is the device's <see cref="GpuDevice.Timeline"/>:
/// where a sequence of submissions (a training step staged a layer a submission) leaves the device idle between
/// them. Streams on one queue run one after another (each opens with a barrier on the work before it), so the
/// spans do not overlap and the time between one's end and the next one's begin is idle.
/// </summary>
public sealed class StreamTimeline
{
    private readonly List<StreamSpan> _spans = [];
    private readonly object _lock = new();

    /// <summary>Every span recorded, in the order the device ran them.</summary>
    public IReadOnlyList<StreamSpan> Spans
    {
        get
        {
            lock (_lock)
            {
                return [.. _spans.OrderBy(s => s.BeginNs)];
            }
        }
    }

    /// <summary>The device's time inside the streams.</summary>
    public double BusyMs => Spans.Sum(s => s.Milliseconds);

    /// <summary>From the first stream's begin to the last one's end.</summary>
    public double SpanMs => Spans is { Count: > 0 } s ? (s.Max(x => x.EndNs) - s[0].BeginNs) / 1e6 : 0;

    /// <summary>The idle time between consecutive streams, longest first.</summary>
    public IReadOnlyList<(string After, string Before, double Milliseconds)> Gaps()
    {
        var s = Spans;
        return [.. Enumerable.Range(1, Math.Max(0, s.Count - 1))
            .Select(i => (s[i - 1].Label, s[i].Label, Math.Max(0, s[i].BeginNs - s[i - 1].EndNs) / 1e6))
            .OrderByDescending(g => g.Item3)];
    }

    internal void Add(StreamSpan span)
    {
        lock (_lock)
        {
            _spans.Add(span);
        }
    }
}
