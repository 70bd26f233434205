using System.CommandLine;
using System.Text.Json;
using Mamba2.Model.Ops;
using Mamba2.Model.Ops.Ssd;
using Mamba2.Vulkan;
using Spectre.Console;

namespace Mamba2.Cli;

/// <summary><c>mamba2 devices</c>: every Vulkan device, what it offers, and which one would be used.</summary>
internal static class DevicesCommand
{
    private static readonly Option<bool> Json = new("--json") { Description = "Print JSON instead of tables" };

    public static Command Create()
    {
        var cmd = new Command("devices", "List Vulkan devices with their limits and features, and mark the one that would be used");
        cmd.Options.Add(CommonOptions.Device);
        cmd.Options.Add(Json);
        cmd.SetAction(result =>
        {
            var (devices, chosen) = GpuDevice.ListDevices(CommonOptions.Read(result));
            var build = ShaderBuild.Of(typeof(Gemm).Assembly);
            if (result.GetValue(Json))
            {
                var shaders = new
                {
                    compiler = build.Compiler,
                    features = ShaderBuild.Describe(build.Features),
                    omitted = build.Omitted.Select(o => new { variant = o.Variant, needs = o.Needs }),
                };
                Console.WriteLine(JsonSerializer.Serialize(new { shaders, chosen, devices = devices.Select(Describe) },
                    new JsonSerializerOptions { WriteIndented = true }));
                return 0;
            }

            Console.WriteLine($"shader build: {build.Compiler}; tensor-core features: {ShaderBuild.Describe(build.Features)}");
            if (build.Omitted.Count > 0)
            {
                Console.WriteLine($"  left out: {string.Join(", ", build.Omitted.Select(o => $"{o.Variant} (needs {o.Needs})"))}");
                Console.WriteLine("  (run build/fetch-shader-compiler.sh for a compiler that has them, then rebuild)");
            }

            foreach (var d in devices)
            {
                var table = new Table().Border(TableBorder.Rounded).HideHeaders().AddColumn("").AddColumn("");
                table.Title = new TableTitle($"[bold]{d.Index}: {Markup.Escape(d.Name)}[/]{(d.Index == chosen ? " [green](chosen)[/]" : "")}");
                foreach (var (key, value) in Describe(d))
                {
                    table.AddRow(Markup.Escape(key), Markup.Escape(value));
                }

                AnsiConsole.Write(table);
            }

            Console.WriteLine($"chosen: {chosen} ({devices.Single(d => d.Index == chosen).Name}); override with --device or MAMBA2_VK_DEVICE");
            return 0;
        });
        return cmd;
    }

    private static Dictionary<string, string> Describe(PhysicalDeviceInfo d)
    {
        var c = d.Capabilities;
        var coop = new List<string>();
        if (c.CooperativeMatrixKhr)
        {
            coop.Add("VK_KHR_cooperative_matrix");
        }

        if (c.CooperativeMatrixNv)
        {
            coop.Add("VK_NV_cooperative_matrix");
        }

        if (c.CooperativeMatrix2Nv)
        {
            coop.Add("VK_NV_cooperative_matrix2");
        }

        var result = new Dictionary<string, string>
        {
            ["index"] = d.Index.ToString(),
            ["name"] = d.Name,
            ["type"] = d.TypeName,
            ["vendor"] = $"{d.VendorName} (0x{d.VendorId:X4}), device 0x{d.DeviceId:X4}",
            ["driver"] = $"{d.DriverName} {d.DriverInfo}".Trim(),
            ["Vulkan API"] = VulkanInstance.VersionString(d.ApiVersion),
            ["subgroup size"] = c.MinSubgroupSize == c.MaxSubgroupSize ? $"{c.SubgroupSize}"
                : $"{c.SubgroupSize} (the driver may pick {c.MinSubgroupSize}..{c.MaxSubgroupSize}; "
                    + (c.SubgroupLayoutHolds ? $"tensor-core kernels require {c.SubgroupSize})" : "tensor-core kernels cannot require a size, so none run)"),
            ["shared memory"] = $"{c.MaxSharedMemoryBytes / 1024} KiB per workgroup",
            ["workgroup"] = $"{c.MaxWorkgroupInvocations} invocations, grid up to {c.MaxWorkgroupCount.X}x{c.MaxWorkgroupCount.Y}x{c.MaxWorkgroupCount.Z}",
            ["storage buffer range"] = Bytes(c.MaxStorageBufferRange),
            ["max allocation"] = Bytes(c.MaxAllocationBytes),
            ["float16 / bfloat16"] = $"{YesNo(c.Float16)} / {YesNo(c.Bfloat16)}; 16-bit storage {YesNo(c.Storage16Bit)}",
            ["float32 atomic add"] = YesNo(c.ShaderFloat32AtomicAdd),
            ["cooperative matrix"] = coop.Count == 0 ? "no" : string.Join(", ", coop),
            ["timestamps"] = c.Timestamps ? $"yes ({c.TimestampPeriodNs} ns/tick)" : "no",
            ["memory heaps"] = string.Join("; ", d.Heaps.Select(h => $"{Bytes(h.SizeBytes)}{(h.DeviceLocal ? " device-local" : "")}")),
        };
        if (c.CooperativeMatrixShapes.Count > 0)
        {
            result["matrix shapes"] = string.Join(", ", c.CooperativeMatrixShapes.Select(s => s.ToString()).Distinct());
        }

        if (c.CooperativeMatrix2 is { } cm2)
        {
            result["coopmat2 workgroup scope"] = $"up to {cm2.MaxWorkgroupSize} invocations, dimension {cm2.MaxDimension}, {cm2.ReservedSharedMemory} B reserved; "
                + (cm2.FlexibleShapes.Count == 0 ? "no flexible shapes" : string.Join(", ", cm2.FlexibleShapes.Select(s => s.ToString()).Distinct()));
        }

        result["tensor-core features"] = ShaderBuild.Describe(c.ShaderFeatures)
            + (c.CooperativeMatrixUnusable is { } fault ? $" (the listed cooperative matrices are not used: {fault})" : "");
        result["tensor-core paths"] = string.Join("; ", TensorCoreGemm.Describe(c).Concat(SsdOp.DescribeTensorCores(c, d.Name)));

        return result;
    }

    private static string YesNo(bool b) => b ? "yes" : "no";

    private static string Bytes(ulong b) => b >= 1UL << 30 ? $"{b / (double)(1UL << 30):F1} GiB" : $"{b / (double)(1UL << 20):F0} MiB";
}
