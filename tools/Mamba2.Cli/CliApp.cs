using System.CommandLine;
using Mamba2.Model.Distributed;
using Mamba2.Vulkan;
using Spectre.Console;

namespace Mamba2.Cli;

/// <summary>The `mamba2` command line: every verb, and the mapping of failures to exit codes.</summary>
public static class CliApp
{
    /// <summary>Exit code for bad input: a missing or unreadable file, a malformed one, an invalid option or value.</summary>
    public const int BadInput = 2;

    /// <summary>Exit code when no usable Vulkan loader or device exists.</summary>
    public const int NoVulkan = 3;

    /// <summary>Exit code when the GPU fails under the run: out of device memory, device lost.</summary>
    public const int GpuFailure = 4;

    /// <summary>Exit code when a training run's loss or weights stopped being finite (it stops without saving that step).</summary>
    public const int TrainingDiverged = 5;

    /// <summary>Exit code for an internal error (a bug): sysexits' EX_SOFTWARE.</summary>
    public const int InternalError = 70;

    /// <summary>Exit code of a training run stopped by Ctrl-C (128 + SIGINT), SIGTERM or, under mpirun, SIGUSR1, after saving: scripts can tell an interrupted run.</summary>
    public const int Interrupted = 130;

    /// <summary>Global flag: print the stack trace of an internal error.</summary>
    public const string VerboseFlag = "--verbose";

    public static RootCommand Build()
    {
        var root = new RootCommand("mamba2: Mamba-2 on any Vulkan GPU (falls back to the CPU driver, lavapipe, where there is none).");
        root.Subcommands.Add(DevicesCommand.Create());
        root.Subcommands.Add(SsdCommand.Create());
        root.Subcommands.Add(ForwardCommand.Create());
        root.Subcommands.Add(GenerateCommand.Create());
        root.Subcommands.Add(ExportCommand.Create());
        root.Subcommands.Add(TokenizeCommand.Create());
        root.Subcommands.Add(TrainCommand.Create());
        root.Subcommands.Add(BenchCommand.Create());
        root.Options.Add(new Option<bool>(VerboseFlag) { Description = "On an internal error, print its stack trace", Recursive = true });
        return root;
    }

    /// <summary>
    /// Runs the command line. The one error boundary: what a user can cause (files, values, options, a device that
    /// lacks a feature) ends in one line naming it and exit code 2; no usable Vulkan in 3; the GPU failing in 4; a
    /// bug in a short report and 70 (the trace only with --verbose). No stack trace reaches a user otherwise.
    /// </summary>
    public static int Run(string[] args)
    {
        var code = RunCommand(args);
        if (code != 0 && Communicator.Joined is { Size: > 1 } job)
        {
            job.Abort(code);   // one rank failing ends every rank of the job (mpirun says which)
        }

        return code;
    }

    /// <summary>Under mpirun, which rank an error line is from.</summary>
    private static string Rank => Communicator.Joined is { Size: > 1 } job ? $"rank {job.Rank} of {job.Size}: " : "";

    private static int RunCommand(string[] args)
    {
        // Spectre keeps the writer it first saw: a host (or a test) that replaces Console.Out between runs would
        // have this run's tables and progress written to the old, perhaps closed, one.
        AnsiConsole.Console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(Console.Out) });
        if (Console.IsOutputRedirected)
        {
            // Logs and pipes: keep table rows on one line instead of wrapping at 80 columns.
            AnsiConsole.Profile.Width = 240;
        }

        try
        {
            var parsed = Build().Parse(args);
            if (parsed.Errors.Count > 0 && args.Length > 0)
            {
                // An unknown option, a missing or malformed value: bad input like any other, one line each and exit
                // code 2, not System.CommandLine's help page and 1. (No arguments at all still shows the help.)
                foreach (var error in parsed.Errors)
                {
                    Console.Error.WriteLine($"{Rank}error: {OneLine(error.Message)}");
                }

                Console.Error.WriteLine($"('{string.Join(' ', ["mamba2", .. CommandPath(parsed.CommandResult), "--help"])}' lists the options)");
                return BadInput;
            }

            return parsed.Invoke(new InvocationConfiguration { EnableDefaultExceptionHandler = false });
        }
        catch (VulkanUnavailableException e)
        {
            Console.Error.WriteLine($"{Rank}error: {e.Message}");
            return NoVulkan;
        }
        catch (Exception e) when (e is OutOfDeviceMemoryException or DeviceLostException)
        {
            Console.Error.WriteLine($"{Rank}error: {e.Message}");
            return GpuFailure;
        }
        catch (Exception e) when (IsUserError(e))
        {
            Console.Error.WriteLine($"{Rank}error: {UserMessage(e)}");
            return BadInput;
        }
        catch (Exception e)
        {
            Console.Error.WriteLine($"{Rank}internal error: {e.GetType().Name}: {OneLine(e.Message)}");
            Console.Error.WriteLine(args.Contains(VerboseFlag)
                ? e.ToString()
                : "This is a bug in mamba2: please report it with the command line (--verbose prints the stack trace).");
            return InternalError;
        }
    }

    /// <summary>Exceptions a user's input causes (as opposed to a bug), which end in exit code 2.</summary>
    public static bool IsUserError(Exception e) => e is ArgumentException or InvalidDataException or KeyNotFoundException
        or IOException or UnauthorizedAccessException or System.Text.Json.JsonException or FormatException or NotSupportedException
        or MissingFeatureException or System.Security.SecurityException;

    /// <summary>The verbs from the root to <paramref name="result"/>'s command, e.g. "bench ssd".</summary>
    private static IEnumerable<string> CommandPath(System.CommandLine.Parsing.CommandResult result)
    {
        var names = new Stack<string>();
        for (var r = result; r is not null && r.Parent is not null; r = r.Parent as System.CommandLine.Parsing.CommandResult)
        {
            names.Push(r.Command.Name);
        }

        return names;
    }

    /// <summary>
    /// A bad-input exception's message as one line for a user. .NET appends " (Parameter 'name')" and, when out of
    /// range, a line "Actual value was v." to an ArgumentException's text: the C# parameter's name is dropped where
    /// the text already names it (chunk_size for ChunkSize) or comes from this project's code (whose messages name the
    /// file, flag or field themselves), and the value is kept, as "(got v)", where it does not already appear.
    /// </summary>
    public static string UserMessage(Exception e)
    {
        if (e is not ArgumentException a)
        {
            return OneLine(e.Message);
        }

        var text = e.Message;
        string? actual = null;
        if (a is ArgumentOutOfRangeException { ActualValue: { } value })
        {
            actual = Convert.ToString(value, System.Globalization.CultureInfo.InvariantCulture);
            var line = text.LastIndexOf('\n');
            if (line >= 0)
            {
                text = text[..line];
            }
        }

        if (a.ParamName is { Length: > 0 } name)
        {
            var suffix = $" (Parameter '{name}')";
            var ours = e.TargetSite?.DeclaringType?.Assembly.GetName().Name?.StartsWith("Mamba2", StringComparison.OrdinalIgnoreCase) == true;
            if (text.EndsWith(suffix, StringComparison.Ordinal) && (ours || Folded(text[..^suffix.Length]).Contains(Folded(name), StringComparison.Ordinal)))
            {
                text = text[..^suffix.Length];
            }
        }

        text = OneLine(text);
        return actual is null || text.Contains(actual, StringComparison.Ordinal) ? text : $"{text} (got {actual})";

        static string Folded(string s) => s.Replace("_", "", StringComparison.Ordinal).Replace("-", "", StringComparison.Ordinal).ToLowerInvariant();
    }

    private static string OneLine(string message) => string.Join(' ', message.Split('\n', StringSplitOptions.TrimEntries | StringSplitOptions.RemoveEmptyEntries));
}
