using System.CommandLine;
using Mamba2.Vulkan;
using Spectre.Console;

namespace Mamba2.Cli;

/// <summary>
/// <c>mamba2 bench tensor-cores</c>: the device's tensor-core ceilings, register-fed (nothing but multiply-adds) and
/// fed from shared memory as a GEMM's inner loop feeds them, for the subgroup blocks a kernel could use: what a
/// tensor-core kernel built on cooperative matrices can reach on this device and driver, before any global memory.
/// </summary>
internal static class TensorCoreBenchCommand
{
    private static readonly Option<int> Repeats = new("--repeats") { DefaultValueFactory = _ => 10, Description = "Timed runs per kernel (median reported)" };

    /// <summary>Blocks of the GEMM and SSD kernels' shapes: (fragments M x N per subgroup, subgroups M x N, BK, buffers).</summary>
    internal static readonly SharedFedBlock[] Blocks =
    [
        new(4, 4, 2, 4, 32, 1),   // 128 x 256 tiles (the KHR GEMM's default): one buffer of BK 32 fits 48 KiB, two do not
        new(4, 4, 2, 4, 16, 2),
        new(4, 4, 2, 2, 32, 2),   // 128 x 128 on 4 subgroups of 64 x 64
        new(4, 2, 2, 4, 32, 2),   // 128 x 128 on 8 subgroups of 64 x 32 (the KHR GEMM's tile where N < 256)
        new(2, 4, 4, 2, 32, 2),
        new(2, 2, 4, 4, 32, 2),   // 128 x 128 on 16 subgroups of 32 x 32
        new(2, 2, 2, 2, 32, 2),   // 64 x 64 on 4 subgroups
    ];

    public static Command Create() => CommonOptions.DeviceCommand("tensor-cores",
        "Tensor-core ceilings: multiply-adds alone, and fed from shared memory as a GEMM's inner loop feeds them, per subgroup block", Run, Repeats);

    private static int Run(ParseResult r)
    {
        var repeats = r.GetValue(Repeats);
        if (repeats < 1)
        {
            Console.Error.WriteLine("error: --repeats must be >= 1");
            return 2;
        }

        using var device = CommonOptions.Open(r);
        var caps = device.Capabilities;
        if (caps.CooperativeMatrixUnusable is { } fault)
        {
            Console.Error.WriteLine($"error: {device.Name}: its cooperative matrices are not used: {fault}");
            return 2;
        }

        var types = new[] { "f16", "bf16" }.Where(t => TensorCoreCeiling.Shape(caps, t) is not null).ToArray();
        if (types.Length == 0)
        {
            Console.Error.WriteLine($"error: {device.Name} lists no cooperative-matrix shape with f16 or bf16 operands and fp32 accumulation");
            return 2;
        }

        DeviceCeilings.SpinUp(device);
        Console.WriteLine($"device: {device.Name} ({device.Info.DriverName}), subgroup {caps.SubgroupSize}, {caps.MaxSharedMemoryBytes / 1024} KiB shared per workgroup, {repeats} timed runs each");
        var table = new Table().AddColumns("operands", "fed from", "block", "shared KiB", "TFLOP/s", "% of register-fed");
        foreach (var type in types)
        {
            var shape = TensorCoreCeiling.Shape(caps, type)!;
            var peak = TensorCoreCeiling.Measure(device, type, repeats);
            table.AddRow($"{type} {shape.M}x{shape.N}x{shape.K}", "registers", "8 chains per subgroup", "", Text(peak), peak is null ? "" : "100");
            foreach (var block in Blocks)
            {
                var tflops = TensorCoreCeiling.MeasureShared(device, type, block, repeats);
                table.AddRow("", "shared memory", $"{block}", $"{block.SharedBytes(shape) / 1024.0:F1}", Text(tflops),
                    tflops is { } t && peak is { } p ? $"{100 * t / p:F0}" : "");
            }
        }

        AnsiConsole.Write(table);
        return 0;
    }

    private static string Text(double? tflops) => tflops switch
    {
        null => "does not run here",
        >= 10 => $"{tflops:F1}",
        _ => $"{tflops:G3}",   // a CPU driver's
    };
}
