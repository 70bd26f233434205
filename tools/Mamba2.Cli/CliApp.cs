using System.CommandLine;
using Mamba2.Vulkan;
using Spectre.Console;

namespace Mamba2.Cli;

/// <summary>The `mamba2` command line: every verb, and the mapping of failures to exit codes.</summary>
public static class CliApp
{
    /// <summary>Exit code for bad input (missing or mismatched tensors, invalid options).</summary>
    public const int BadInput = 2;

    /// <summary>Exit code when no usable Vulkan loader or device exists.</summary>
    public const int NoVulkan = 3;

    public static RootCommand Build()
    {
        var root = new RootCommand("mamba2: Mamba-2 on any Vulkan GPU (falls back to the CPU driver, lavapipe, where there is none).");
        root.Subcommands.Add(DevicesCommand.Create());
        root.Subcommands.Add(SsdCommand.Create());
        root.Subcommands.Add(ForwardCommand.Create());
        root.Subcommands.Add(GenerateCommand.Create());
        root.Subcommands.Add(TrainCommand.Create());
        root.Subcommands.Add(BenchCommand.Create());
        return root;
    }

    public static int Run(string[] args)
    {
        if (Console.IsOutputRedirected)
        {
            // Logs and pipes: keep table rows on one line instead of wrapping at 80 columns.
            AnsiConsole.Profile.Width = 240;
        }

        try
        {
            return Build().Parse(args).Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
        }
        catch (VulkanUnavailableException e)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return NoVulkan;
        }
        catch (Exception e) when (e is ArgumentException or InvalidDataException or KeyNotFoundException or FileNotFoundException or FormatException)
        {
            Console.Error.WriteLine($"error: {e.Message}");
            return BadInput;
        }
    }
}
