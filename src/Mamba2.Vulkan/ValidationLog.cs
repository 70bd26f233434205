using System.Collections.Concurrent;

namespace Mamba2.Vulkan;

/// <summary>One message from the validation layers (warnings and errors only).</summary>
public sealed record ValidationMessage(string Severity, string Type, string? MessageId, string Text)
{
    public override string ToString() => $"[{Severity}/{Type}] {MessageId}: {Text}";
}

/// <summary>Collects validation-layer messages so tests (and users who opt in) can fail on them.</summary>
public sealed class ValidationLog
{
    private readonly ConcurrentQueue<ValidationMessage> _messages = new();

    public int Count => _messages.Count;

    /// <summary>Raised on the driver's thread for every collected message.</summary>
    public event Action<ValidationMessage>? MessageReceived;

    internal void Add(ValidationMessage message)
    {
        _messages.Enqueue(message);
        MessageReceived?.Invoke(message);
    }

    /// <summary>Removes and returns every message collected so far.</summary>
    public IReadOnlyList<ValidationMessage> Drain()
    {
        var list = new List<ValidationMessage>();
        while (_messages.TryDequeue(out var m))
        {
            list.Add(m);
        }

        return list;
    }
}
