using System.CommandLine;
using Mamba2.Vulkan;
using Spectre.Console;

namespace Mamba2.Cli;

/// <summary>
/// <c>mamba2 bench shared-memory</c>: a latency-bound kernel's throughput at each size of shared memory a workgroup,
/// against the smallest: where it steps down, fewer workgroups are resident an SM. What a kernel's shared memory
/// costs it on this device and driver, which neither reports.
/// </summary>
internal static class SharedMemoryBenchCommand
{
    private static readonly Option<int> Repeats = new("--repeats") { DefaultValueFactory = _ => 5, Description = "Timed runs per size (median reported)" };

    private static readonly Option<int> StepKib = new("--step-kib") { DefaultValueFactory = _ => 2, Description = "KiB between the sizes measured, from none to the device's shared memory a workgroup" };

    public static Command Create() => CommonOptions.DeviceCommand("shared-memory",
        "Workgroups resident against shared memory a workgroup: a latency-bound kernel's throughput per size, against the smallest", Run, Repeats, StepKib);

    private static int Run(ParseResult r)
    {
        var (repeats, step) = (r.GetValue(Repeats), r.GetValue(StepKib));
        if (repeats < 1 || step < 1)
        {
            Console.Error.WriteLine($"error: {(repeats < 1 ? "--repeats" : "--step-kib")} must be >= 1");
            return 2;
        }

        using var device = CommonOptions.Open(r);
        var max = device.Capabilities.MaxSharedMemoryBytes;
        var sizes = Enumerable.Range(0, (int)(max / 1024 / step) + 1).Select(i => (uint)(i * step * 1024)).Where(b => b <= max).ToList();
        DeviceCeilings.SpinUp(device);
        Console.WriteLine($"device: {device.Name} ({device.Info.DriverName}), {max / 1024} KiB shared a workgroup, workgroups of 256, {repeats} timed runs each");
        var table = new Table().AddColumns("shared KiB a workgroup", "ms", "throughput vs the first", "");
        var previous = 1.0;
        foreach (var p in SharedMemoryOccupancy.Measure(device, sizes, repeats))
        {
            // A drop of a tenth or more from the size before: a workgroup fewer resident from here on.
            var mark = p.Relative < 0.9 * previous ? "fewer resident" : "";
            table.AddRow($"{p.Bytes / 1024.0:F0}", $"{p.Ms:F3}", $"{p.Relative:F2}", mark);
            previous = p.Relative;
        }

        AnsiConsole.Write(table);
        if (device.Info.IsCpu)
        {
            Console.WriteLine("(a CPU driver: its workgroups run on threads, not resident on compute units; these times say little)");
        }

        return 0;
    }
}
