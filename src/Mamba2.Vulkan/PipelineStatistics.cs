using System.Text;
using Silk.NET.Vulkan;

namespace Mamba2.Vulkan;

/// <summary>One statistic the driver reports for a compiled pipeline (VK_KHR_pipeline_executable_properties), e.g. its register count.</summary>
public sealed record PipelineStatistic(string Name, string Value, string Description)
{
    public override string ToString() => $"{Name}={Value}";
}

/// <summary>A built kernel with what the driver says about its compiled code.</summary>
public sealed record KernelStatistics(string Kernel, IReadOnlyList<uint> Specialization, IReadOnlyList<PipelineStatistic> Statistics)
{
    public override string ToString() => $"{Kernel} [{string.Join(',', Specialization)}]: {string.Join(", ", Statistics)}";
}

/// <summary>Reads a pipeline's statistics when the device was opened with <see cref="VulkanOptions.PipelineStatistics"/>.</summary>
internal static unsafe class PipelineStatisticsReader
{
    public const string Extension = "VK_KHR_pipeline_executable_properties";

    public static IReadOnlyList<PipelineStatistic> Read(GpuDevice device, Pipeline pipeline)
    {
        var getExecutables = (delegate* unmanaged<Device, PipelineInfoKHR*, uint*, PipelineExecutablePropertiesKHR*, Result>)
            device.Api.GetDeviceProcAddr(device.Handle, "vkGetPipelineExecutablePropertiesKHR").Handle;
        var getStatistics = (delegate* unmanaged<Device, PipelineExecutableInfoKHR*, uint*, PipelineExecutableStatisticKHR*, Result>)
            device.Api.GetDeviceProcAddr(device.Handle, "vkGetPipelineExecutableStatisticsKHR").Handle;
        if (getExecutables is null || getStatistics is null)
        {
            return [];
        }

        var pipelineInfo = new PipelineInfoKHR { SType = StructureType.PipelineInfoKhr, Pipeline = pipeline };
        uint executables = 0;
        getExecutables(device.Handle, &pipelineInfo, &executables, null).Check("vkGetPipelineExecutablePropertiesKHR");
        var result = new List<PipelineStatistic>();
        for (uint e = 0; e < executables; e++)
        {
            var info = new PipelineExecutableInfoKHR { SType = StructureType.PipelineExecutableInfoKhr, Pipeline = pipeline, ExecutableIndex = e };
            uint count = 0;
            getStatistics(device.Handle, &info, &count, null).Check("vkGetPipelineExecutableStatisticsKHR");
            var stats = new PipelineExecutableStatisticKHR[count];
            for (var i = 0; i < stats.Length; i++)
            {
                stats[i].SType = StructureType.PipelineExecutableStatisticKhr;
            }

            fixed (PipelineExecutableStatisticKHR* p = stats)
            {
                getStatistics(device.Handle, &info, &count, p).Check("vkGetPipelineExecutableStatisticsKHR");
                for (var i = 0; i < (int)count; i++)
                {
                    var value = p[i].Format switch
                    {
                        PipelineExecutableStatisticFormatKHR.Bool32Khr => ((uint)p[i].Value.B32 != 0).ToString(),
                        PipelineExecutableStatisticFormatKHR.Int64Khr => p[i].Value.I64.ToString(System.Globalization.CultureInfo.InvariantCulture),
                        PipelineExecutableStatisticFormatKHR.Uint64Khr => p[i].Value.U64.ToString(System.Globalization.CultureInfo.InvariantCulture),
                        _ => p[i].Value.F64.ToString("G4", System.Globalization.CultureInfo.InvariantCulture),
                    };
                    result.Add(new PipelineStatistic(Text(p[i].Name, 256), value, Text(p[i].Description, 256)));
                }
            }
        }

        return result;
    }

    private static string Text(byte* chars, int max)
    {
        var length = 0;
        while (length < max && chars[length] != 0)
        {
            length++;
        }

        return Encoding.UTF8.GetString(chars, length);
    }
}
