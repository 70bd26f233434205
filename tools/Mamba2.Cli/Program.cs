using System.CommandLine;
using Mamba2.Cli;
using Mamba2.Vulkan;
using Spectre.Console;

var root = new RootCommand("mamba2: Mamba-2 on any Vulkan GPU (falls back to the CPU driver, lavapipe, where there is none).");
root.Subcommands.Add(DevicesCommand.Create());
root.Subcommands.Add(BenchCommand.Create());

if (Console.IsOutputRedirected)
{
    // Logs and pipes: keep table rows on one line instead of wrapping at 80 columns.
    AnsiConsole.Profile.Width = 240;
}

try
{
    return root.Parse(args).Invoke();
}
catch (VulkanUnavailableException e)
{
    Console.Error.WriteLine($"error: {e.Message}");
    return 3;
}
