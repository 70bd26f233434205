namespace Mamba2.Vulkan;

/// <summary>
/// One stream's work on the device's clock: from the end of its opening barrier (the work launched before it done) to
/// the end of its last command. On the host's clock (ms since the timeline was made): when the stream was begun and
/// when it was launched, so that a gap on the device can be matched with the recording the host was doing.
/// </summary>
public readonly record struct StreamSpan(string Label, double BeginNs, double EndNs, double HostBeginMs, double HostLaunchMs)
{
    public double Milliseconds => (EndNs - BeginNs) / 1e6;

    /// <summary>Host time from the stream's creation to its launch: its recording, and whatever the host did meanwhile.</summary>
    public double RecordingMs => HostLaunchMs - HostBeginMs;
}

/// <summary>
/// The host blocked on a stream of the timeline (a wait, a dispose, or a mapped buffer's read or write of what it
/// used), from <see cref="AtMs"/> for <see cref="Milliseconds"/> on the host's clock of the spans.
/// </summary>
public readonly record struct HostWait(string Label, double AtMs, double Milliseconds);

/// <summary>
/// The device-side span of every stream that completes while this is the device's <see cref="GpuDevice.Timeline"/>:
/// where a sequence of submissions (a training step staged a layer a submission) leaves the device idle between
/// them. Streams on one queue run one after another (each opens with a barrier on the work before it), so the
/// spans do not overlap and the time between one's end and the next one's begin is idle.
/// </summary>
public sealed class StreamTimeline
{
    private readonly List<StreamSpan> _spans = [];
    private readonly List<HostWait> _waits = [];
    private readonly object _lock = new();
    private readonly System.Diagnostics.Stopwatch _host = System.Diagnostics.Stopwatch.StartNew();

    /// <summary>Now on the host's clock of the spans: ms since this timeline was made.</summary>
    public double HostNowMs => _host.Elapsed.TotalMilliseconds;

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

    /// <summary>Every time the host blocked on one of the timeline's streams, in the order the waits began.</summary>
    public IReadOnlyList<HostWait> Waits
    {
        get
        {
            lock (_lock)
            {
                return [.. _waits.OrderBy(w => w.AtMs)];
            }
        }
    }

    /// <summary>
    /// The streams being recorded when <paramref name="wait"/> began (begun, not yet launched): what the host was
    /// doing when it blocked.
    /// </summary>
    public IReadOnlyList<string> RecordingDuring(HostWait wait) =>
        [.. Spans.Where(s => s.HostBeginMs <= wait.AtMs && wait.AtMs < s.HostLaunchMs).Select(s => s.Label)];

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

    /// <summary>The spans as CSV: label, device begin and end (ms from the first span's begin), host begin and launch (ms).</summary>
    public string ToCsv()
    {
        var s = Spans;
        var origin = s.Count > 0 ? s[0].BeginNs : 0;
        var ic = System.Globalization.CultureInfo.InvariantCulture;
        var csv = new System.Text.StringBuilder("label,device_begin_ms,device_end_ms,host_begin_ms,host_launch_ms\n");
        foreach (var x in s)
        {
            csv.Append(ic, $"{x.Label},{(x.BeginNs - origin) / 1e6:F3},{(x.EndNs - origin) / 1e6:F3},{x.HostBeginMs:F3},{x.HostLaunchMs:F3}\n");
        }

        return csv.ToString();
    }

    internal void Add(StreamSpan span)
    {
        lock (_lock)
        {
            _spans.Add(span);
        }
    }

    internal void AddWait(HostWait wait)
    {
        lock (_lock)
        {
            _waits.Add(wait);
        }
    }
}
