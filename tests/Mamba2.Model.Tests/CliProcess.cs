using System.Diagnostics;
using Mamba2.Cli;

namespace Mamba2.Model.Tests;

/// <summary>The CLI in processes of its own (a kill, mpirun), for the tests that need more than CliApp.Run in-process.</summary>
internal static class CliProcess
{
    /// <summary>
    /// Runs <paramref name="launcher"/> (e.g. mpirun and its arguments; empty: none) then dotnet mamba2.dll
    /// <paramref name="args"/>; with <paramref name="killWhen"/>, kills it (exit -9) once that says so (asked every
    /// few milliseconds while it runs). Output is collected.
    /// </summary>
    public static (int Code, string Out, string Err) Run(string[] launcher, string[] args, Func<bool>? killWhen = null, TimeSpan? limit = null)
    {
        // SIGUSR1 opened on this thread, whose mask a started process inherits: a job runner that blocks it (as one GPU
        // host's did) would pass the block to mpirun, which then never forwards the stop-and-save signal a test sends.
        SignalMask.Open(SignalMask.Usr1);
        var start = new ProcessStartInfo(launcher.Length > 0 ? launcher[0] : "dotnet") { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in launcher.Skip(1).Concat(launcher.Length > 0 ? ["dotnet"] : []).Append(Assembly()).Concat(args))
        {
            start.ArgumentList.Add(a);
        }

        using var p = Process.Start(start)!;
        var stdout = new System.Text.StringBuilder();
        var stderr = new System.Text.StringBuilder();
        p.OutputDataReceived += (_, e) => { lock (stdout) { stdout.AppendLine(e.Data); } };
        p.ErrorDataReceived += (_, e) => { lock (stderr) { stderr.AppendLine(e.Data); } };
        p.BeginOutputReadLine();
        p.BeginErrorReadLine();
        var max = limit ?? TimeSpan.FromMinutes(5);
        var clock = Stopwatch.StartNew();
        if (killWhen is not null)
        {
            while (!p.WaitForExit(5) && clock.Elapsed < max)
            {
                if (killWhen())
                {
                    p.Kill(entireProcessTree: true);
                    p.WaitForExit();
                    return (-9, stdout.ToString(), stderr.ToString());
                }
            }
        }

        if (!p.WaitForExit(max > clock.Elapsed ? max - clock.Elapsed : TimeSpan.Zero))
        {
            p.Kill(entireProcessTree: true);
            p.WaitForExit();
            throw new TimeoutException($"{string.Join(' ', start.ArgumentList)} ran over {max.TotalMinutes} minutes; its output's end:\n{Tail(stdout)}\n--- stderr:\n{Tail(stderr)}");
        }

        p.WaitForExit();   // the output's end
        return (p.ExitCode, stdout.ToString(), stderr.ToString());
    }

    private static string Tail(System.Text.StringBuilder output)
    {
        lock (output)
        {
            return output.Length <= 2000 ? output.ToString() : output.ToString(output.Length - 2000, 2000);
        }
    }

    /// <summary>
    /// The CLI of this build: the copy beside this test assembly (the project reference puts it there, also in a
    /// published test program carried to a GPU host), else the one the solution built for this configuration
    /// (tools/Mamba2.Cli/bin/CONFIG/TFM/mamba2.dll above it).
    /// </summary>
    public static string Assembly()
    {
        var beside = Path.Combine(AppContext.BaseDirectory, "mamba2.dll");
        if (File.Exists(beside) && File.Exists(Path.ChangeExtension(beside, ".runtimeconfig.json")))
        {
            return beside;
        }

        var here = new DirectoryInfo(AppContext.BaseDirectory.TrimEnd(Path.DirectorySeparatorChar));
        var (tfm, configuration) = (here.Name, here.Parent!.Name);
        for (var d = here; d is not null; d = d.Parent)
        {
            var cli = Path.Combine(d.FullName, "tools", "Mamba2.Cli", "bin", configuration, tfm, "mamba2.dll");
            if (File.Exists(cli))
            {
                return cli;
            }
        }

        throw new FileNotFoundException($"mamba2.dll ({configuration}/{tfm}) not found above {AppContext.BaseDirectory}: build the solution first.");
    }
}
