using Mamba2.Cli;

namespace Mamba2.Model.Tests;

/// <summary>The CLI run in process with its stdout and stderr captured (tests run one at a time).</summary>
internal static class CliCapture
{
    public static (int Code, string Out, string Err) Run(params string[] args)
    {
        var (previousOut, previousErr) = (Console.Out, Console.Error);
        using var stdout = new StringWriter();
        using var stderr = new StringWriter();
        Console.SetOut(stdout);
        Console.SetError(stderr);
        try
        {
            var code = CliApp.Run(args);
            return (code, stdout.ToString().Replace("\r\n", "\n", StringComparison.Ordinal), stderr.ToString());
        }
        finally
        {
            Console.SetOut(previousOut);
            Console.SetError(previousErr);
        }
    }
}
