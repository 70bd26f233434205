using System.CommandLine;
using System.Globalization;
using Mamba2.Model.Distributed;
using Mamba2.Model.Generation;
using Mamba2.Model.Ops;
using Mamba2.Model.Tensors;
using Mamba2.Vulkan;
using Spectre.Console;

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

    public static readonly Option<string?> PrecisionOption = new("--precision")
    {
        HelpName = "fp32|fp32-fast|bf16",
        Description = "What products are computed in: fp32 (exact), fp32-fast (tensor cores, f16 operands, fp32 in and out) or bf16 (bf16 operands; the same values as scaled f16 where the device has no bf16 cooperative matrices); default: fp32-fast on a GPU with cooperative matrices, else fp32",
    };

    /// <summary>A verb with its own options, then --precision, --device and --validation, running <paramref name="run"/>.</summary>
    public static Command GpuCommand(string name, string description, Func<ParseResult, int> run, params Option[] options) =>
        DeviceCommand(name, description, run, [.. options, PrecisionOption]);

    /// <summary>A verb that computes in no precision mode (a device probe): its own options, then --device and --validation.</summary>
    public static Command DeviceCommand(string name, string description, Func<ParseResult, int> run, params Option[] options)
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

    /// <summary>
    /// A <c>--dtype f32|bf16</c> option (or another <paramref name="name"/>: bench gemm's <c>--out</c>): what a bench's
    /// tensors are, f32 by default, described for its command.
    /// </summary>
    public static Option<string> DTypeOption(string description, string name = "--dtype")
    {
        var option = new Option<string>(name) { DefaultValueFactory = _ => "f32", Description = description };
        option.AcceptOnlyFromAmong("f32", "bf16");
        return option;
    }

    /// <summary>--bf16-activations: a bf16 model keeps its layers' activations as bf16 tensors (Mamba2Layer.StoreActivationsAsBf16).</summary>
    public static readonly Option<bool> Bf16Activations = new("--bf16-activations")
    {
        Description = "with --precision bf16: keep the layers' activations (the SSD's x, B, C, y, in_proj's output) as bf16 tensors: less memory a step",
    };

    /// <summary>A training step's tokens, --batch x --seqlen, as one tensor indexes them (at most 2^31 - 1).</summary>
    public static void CheckTokensAStep(int batch, int seqlen)
    {
        if ((long)batch * seqlen > int.MaxValue)
        {
            throw new ArgumentException($"--batch {batch} x --seqlen {seqlen} is more tokens a step than a tensor can index (at most {int.MaxValue}).");
        }
    }

    /// <summary>A bench verb's untimed and timed runs, checked before the device opens: --warmup >= 0, --repeats >= 1.</summary>
    public static void CheckRuns(int warmup, int repeats)
    {
        if (warmup < 0 || repeats < 1)
        {
            throw new ArgumentException($"--warmup must be >= 0 and --repeats >= 1, got {warmup} and {repeats}.");
        }
    }

    /// <summary>
    /// Whether <see cref="Bf16Activations"/> is asked for and may be: false, true, or null (said on stderr) where it
    /// is asked outside precision bf16. Without the flag, what a run's settings kept (<paramref name="recorded"/>),
    /// in precision bf16 only (a resumed run moved to another mode by --precision leaves them).
    /// </summary>
    public static bool? ResolveBf16Activations(ParseResult result, Precision precision, bool recorded = false)
    {
        if (result.GetResult(Bf16Activations) is not { Implicit: false })
        {
            return recorded && precision == Precision.Bf16;
        }

        if (!result.GetValue(Bf16Activations))
        {
            return false;
        }

        if (precision != Precision.Bf16)
        {
            Console.Error.WriteLine($"error: --bf16-activations: bf16 activations are kept in --precision bf16, not {precision.Name()}");
            return null;
        }

        return true;
    }

    /// <summary>The tensors' type <paramref name="option"/> asks for, or null (said on stderr) where bf16 is asked outside precision bf16.</summary>
    public static TensorDType? ResolveDType(ParseResult result, Option<string> option, Precision precision)
    {
        if (result.GetValue(option) != "bf16")
        {
            return TensorDType.F32;
        }

        if (precision != Precision.Bf16)
        {
            Console.Error.WriteLine($"error: --dtype bf16: bf16 tensors run in --precision bf16, not {precision.Name()}");
            return null;
        }

        return TensorDType.BF16;
    }

    /// <summary>
    /// The precision of this run: --precision, else the mode the run's settings name (<paramref name="recorded"/>:
    /// the name and the file that holds it, a resumed run's train.json or a --config), so a resumed run computes as
    /// it did, else the device's default; printed as the run's first line on stderr (stdout stays the verb's
    /// output). Null after a one-line error where the name is unknown or the device cannot run that mode (for a
    /// recorded mode an error, not a silent change).
    /// </summary>
    public static Precision? ResolvePrecision(ParseResult result, GpuDevice device, (string Name, string File)? recorded = null)
    {
        var text = result.GetValue(PrecisionOption);
        var note = Communicator.Joined is not { IsRoot: false };   // under mpirun, rank 0 says it for all
        Precision precision;
        if (text is null && recorded is null)
        {
            precision = PrecisionPolicy.DefaultFor(device);
            if (note)
            {
                Console.Error.WriteLine($"precision: {precision.Name()} (the default on this device; --precision fp32|fp32-fast|bf16)");
            }

            return precision;
        }

        // Named by --precision, else by the run's settings.
        var (name, said, from) = text is not null ? (text, "--precision", "") : (recorded!.Value.Name, $"{recorded.Value.File}: precision", recorded.Value.File);
        if (!PrecisionPolicy.TryParse(name, out precision))
        {
            Console.Error.WriteLine($"error: {said} '{name}': expected fp32, fp32-fast or bf16");
            return null;
        }

        if (PrecisionPolicy.WhyNot(device, precision) is { } reason)
        {
            Console.Error.WriteLine($"error: {said} {precision.Name()}: {reason}{(text is null ? " (give --precision to go on in another mode)" : "")}");
            return null;
        }

        if (note)
        {
            Console.Error.WriteLine($"precision: {precision.Name()}{Products(precision, device)}{(text is null ? $" (the run's, from {from}; --precision fp32|fp32-fast|bf16)" : "")}");
        }

        return precision;
    }

    /// <summary>What the run line adds where bf16's products run on f16 tensor cores.</summary>
    public static string Products(Precision precision, GpuDevice device) =>
        precision == Precision.Bf16 && precision.Operands(device) == GemmOperands.Bf16ViaF16
            ? $" (bf16 values multiplied as scaled f16: {(OpTuning.Of(device).Bf16Products is null ? "this device has no bf16 cooperative matrices" : OpTuning.Bf16ProductsVariable + "=f16")})"
            : "";

    /// <summary>
    /// The entries of a comma-separated list given with <paramref name="option"/> (spaces and a trailing comma
    /// allowed); an empty entry ("1,,3", most likely a lost value) is refused rather than skipped.
    /// </summary>
    public static string[] SplitList(string option, string text)
    {
        if (string.IsNullOrWhiteSpace(text.Replace(',', ' ')))
        {
            throw new FormatException($"{option} '{text}' lists nothing.");
        }

        var parts = text.Trim().TrimEnd(',').Split(',', StringSplitOptions.TrimEntries);
        if (parts.Any(string.IsNullOrEmpty))
        {
            throw new FormatException($"{option} '{text}': an entry between commas is empty.");
        }

        return parts;
    }

    /// <summary>Comma-separated token ids (<see cref="SplitList"/>) given with <paramref name="option"/>; a non-integer names itself.</summary>
    public static int[] ParseIds(string option, string text) =>
        [.. SplitList(option, text).Select(s => int.TryParse(s, NumberStyles.Integer, CultureInfo.InvariantCulture, out var v) ? v : throw new FormatException($"{option}: '{s}' is not an integer."))];

    /// <summary>A model directory's tokenizer (<see cref="HfTokenizer.ForModel"/>), saying on stderr when it is the byte tokenizer for want of a tokenizer.json.</summary>
    public static ITokenizer ModelTokenizer(string directory)
    {
        var tokenizer = HfTokenizer.ForModel(directory, out var fallback);
        if (fallback)
        {
            Console.Error.WriteLine($"note: {directory} has no {HfTokenizer.FileName}; text goes through the byte tokenizer (a token per UTF-8 byte).");
        }

        return tokenizer;
    }

    /// <summary>Whether <paramref name="path"/> lies below <paramref name="directory"/> (not the directory itself).</summary>
    public static bool IsInside(string path, string directory) =>
        Path.TrimEndingDirectorySeparator(Path.GetFullPath(path)).StartsWith(
            Path.TrimEndingDirectorySeparator(Path.GetFullPath(directory)) + Path.DirectorySeparatorChar, StringComparison.Ordinal);

    /// <summary>An input file must exist and be a file; the message names the option.</summary>
    public static void CheckInputFile(string option, FileInfo input)
    {
        if (Directory.Exists(input.FullName))
        {
            throw new IOException($"{option} {input.FullName} is a directory, not a file.");
        }

        if (!input.Exists)
        {
            throw new FileNotFoundException($"{option} {input.FullName}: no such file.", input.FullName);
        }
    }

    /// <summary>
    /// Checked before any work: an output file's directory must exist, it must not be a directory, and it must not
    /// be the input (which it would overwrite).
    /// </summary>
    public static void CheckOutputFile(string option, FileInfo output, FileInfo? input = null)
    {
        if (input is not null && string.Equals(Path.GetFullPath(output.FullName), Path.GetFullPath(input.FullName), StringComparison.Ordinal))
        {
            throw new ArgumentException($"{option} {output.FullName} is the input file; write the results to another file.");
        }

        if (Directory.Exists(output.FullName))
        {
            throw new IOException($"{option} {output.FullName} is a directory; name a file in it.");
        }

        if (!Directory.Exists(Path.GetDirectoryName(output.FullName)))
        {
            throw new DirectoryNotFoundException($"{option} {output.FullName}: the directory does not exist.");
        }
    }

    /// <summary>Under mpirun, ranks other than 0 print nothing on stdout (errors still go to stderr, with their rank).</summary>
    public static void QuietUnlessRoot(Communicator comm)
    {
        if (!comm.IsRoot)
        {
            AnsiConsole.Console = AnsiConsole.Create(new AnsiConsoleSettings { Out = new AnsiConsoleOutput(TextWriter.Null) });
            Console.SetOut(TextWriter.Null);
        }
    }

    /// <summary>
    /// Under mpirun, rank 0 notes on stderr when it may use one CPU core only (Open MPI binds each of 2 ranks to a
    /// core by default): the recording, the gradient sums' passes and MPI then share it.
    /// </summary>
    public static void NoteRankCores(Communicator comm)
    {
        if (comm is { Size: > 1, IsRoot: true } && Environment.ProcessorCount == 1)
        {
            Console.Error.WriteLine("note: each rank may use 1 CPU core (mpirun binds ranks to cores by default); the gradient sums and the recording share it: `mpirun --bind-to none` (or --map-by slot:PE=N) gives them more.");
        }
    }

    /// <summary>
    /// Opens the device and, with validation on, echoes its messages to stderr. <paramref name="slot"/>: a rank's
    /// index on its host, which device it takes when none is named (<see cref="VulkanOptions.DeviceSlot"/>).
    /// </summary>
    public static GpuDevice Open(ParseResult result, int slot = 0)
    {
        var device = GpuDevice.Create(Read(result) with { DeviceSlot = slot });
        device.ValidationLog.MessageReceived += m => Console.Error.WriteLine($"vulkan: {m}");
        return device;
    }
}
