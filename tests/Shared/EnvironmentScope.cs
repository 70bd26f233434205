namespace Mamba2.Tests;

/// <summary>Sets an environment variable for the life of the scope (tests run one at a time), then clears it.</summary>
public sealed class EnvironmentScope : IDisposable
{
    private readonly string _name;

    public EnvironmentScope(string name, string? value)
    {
        _name = name;
        Environment.SetEnvironmentVariable(name, value);
    }

    public void Dispose() => Environment.SetEnvironmentVariable(_name, null);
}
