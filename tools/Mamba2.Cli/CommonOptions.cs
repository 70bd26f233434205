using System.CommandLine;
using Mamba2.Vulkan;

namespace Mamba2.Cli;

/// <summary>Options every GPU verb shares.</summary>
internal static class CommonOptions
{
    public static readonly Option<string?> Device = new("--device")
    {
        Description = "Device index (from `mamba2 devices`) or a name substring; default: MAMBA2_VK_DEVICE, else the best GPU, else the CPU driver",
    };

    public static readonly Option<bool> Validation = new("--validation")
    {
        Description = "Enable the Vulkan validation layers and print their messages (also MAMBA2_VK_VALIDATION=1)",
    };

    /// <summary>A verb with its own options, then --device and --validation, running <paramref name="run"/>.</summary>
    public static Command GpuCommand(string name, string description, Func<ParseResult, int> run, params Option[] options)
    {
        var cmd = new Command(name, description);
        foreach (var o in options.Append(Device).Append(Validation))
        {
            cmd.Options.Add(o);
        }

        cmd.SetAction(run);
        return cmd;
    }

    public static VulkanOptions Read(ParseResult result)
    {
        var o = VulkanOptions.FromEnvironment();
        if (result.GetValue(Device) is { } device)
        {
            o = o with { Device = device };
        }

        if (result.GetValue(Validation))
        {
            o = o with { Validation = true };
        }

        return o;
    }

    /// <summary>Opens the device and, with validation on, echoes its messages to stderr.</summary>
    public static GpuDevice Open(ParseResult result)
    {
        var device = GpuDevice.Create(Read(result));
        device.ValidationLog.MessageReceived += m => Console.Error.WriteLine($"vulkan: {m}");
        return device;
    }
}
