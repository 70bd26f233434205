using Mamba2.Vulkan;

namespace Mamba2.Model.Ops;

/// <summary>
/// The precision policy (docs/DESIGN.md, "Precision policy"): what a product is computed in.
/// </summary>
public enum Precision
{
    /// <summary>Exact fp32 on the shader cores: relative error &lt;= 1e-5 against float64. The reference.</summary>
    Fp32,

    /// <summary>
    /// fp32 in and out, products on tensor cores with f16 operands (each tensor scaled by a power of two into f16's
    /// range), fp32 accumulation: relative error &lt;= 2e-3 against float64, as Triton's TF32 dots give.
    /// </summary>
    Fp32Fast,

    /// <summary>
    /// Products with bf16 operands and fp32 accumulation: relative error &lt;= 1e-2 against float64 on bf16-rounded
    /// inputs. On devices whose cooperative matrices take f16 only, the same bf16 values multiplied as scaled f16
    /// (<see cref="GemmOperands.Bf16ViaF16"/>).
    /// </summary>
    Bf16,
}

/// <summary>Names, defaults, tolerances and the GEMM each <see cref="Precision"/> runs.</summary>
public static class PrecisionPolicy
{
    /// <summary>The names the CLI and docs use: fp32, fp32-fast, bf16.</summary>
    public static string Name(this Precision precision) => precision switch
    {
        Precision.Fp32 => "fp32",
        Precision.Fp32Fast => "fp32-fast",
        Precision.Bf16 => "bf16",
        _ => throw new ArgumentOutOfRangeException(nameof(precision)),
    };

    /// <summary>Parses a <see cref="Name"/>; false for anything else.</summary>
    public static bool TryParse(string? text, out Precision precision)
    {
        foreach (var p in Enum.GetValues<Precision>())
        {
            if (string.Equals(text, p.Name(), StringComparison.OrdinalIgnoreCase))
            {
                precision = p;
                return true;
            }
        }

        precision = Precision.Fp32;
        return false;
    }

    /// <summary>The relative error against float64 the mode promises.</summary>
    public static double Tolerance(this Precision precision) => precision switch
    {
        Precision.Fp32 => 1e-5,
        Precision.Fp32Fast => 2e-3,
        Precision.Bf16 => 1e-2,
        _ => throw new ArgumentOutOfRangeException(nameof(precision)),
    };

    /// <summary>
    /// The default on <paramref name="device"/>: fp32-fast on a GPU whose build and driver run the f16 tensor-core
    /// GEMM; exact fp32 on a CPU driver (whose cooperative matrices are emulated, slower than its fp32 path) and
    /// on devices without tensor cores.
    /// </summary>
    public static Precision DefaultFor(GpuDevice device) =>
        !device.Info.IsCpu && WhyNot(device, Precision.Fp32Fast) is null ? Precision.Fp32Fast : Precision.Fp32;

    /// <summary>Why <paramref name="device"/> cannot run products in <paramref name="precision"/> (the GEMM's or the SSD's), or null when it can.</summary>
    public static string? WhyNot(GpuDevice device, Precision precision)
    {
        if (precision == Precision.Fp32)
        {
            return null;
        }

        var (operands, staging) = GemmOf(precision, device);
        return TensorCoreGemm.WhyNot(device, operands, TensorCoreApi.Auto, staging) is { } why ? $"{precision.Name()}: {why}"
            : Ssd.SsdOp.WhyNot(device, precision);
    }

    /// <summary>
    /// The operands a mode's products take on <paramref name="device"/> (the GEMM's and the SSD's alike): fp32,
    /// f16 for fp32-fast, and for bf16 bf16 where the build and device multiply bf16 cooperative matrices in both
    /// (else bf16 values as scaled f16, <see cref="GemmOperands.Bf16ViaF16"/>), unless
    /// <see cref="OpTuning.Bf16Products"/> names one.
    /// </summary>
    public static GemmOperands Operands(this Precision precision, GpuDevice device) => precision switch
    {
        Precision.Fp32 => GemmOperands.Fp32,
        Precision.Fp32Fast => GemmOperands.F16,
        Precision.Bf16 => OpTuning.Of(device).Bf16Products ?? Bf16Products.GetValue(device, d => new(
            Multiplies(d, GemmOperands.Bf16) || !Multiplies(d, GemmOperands.Bf16ViaF16) ? GemmOperands.Bf16 : GemmOperands.Bf16ViaF16)).Value,
        _ => throw new ArgumentOutOfRangeException(nameof(precision)),
    };

    // Per device, found once: every op asks.
    private static readonly System.Runtime.CompilerServices.ConditionalWeakTable<GpuDevice, System.Runtime.CompilerServices.StrongBox<GemmOperands>> Bf16Products = new();

    // Whether the build and device run both the GEMM and the SSD with these operands (where neither bf16 form runs,
    // bf16 is refused naming bf16's own kernels).
    private static bool Multiplies(GpuDevice device, GemmOperands operands) =>
        TensorCoreGemm.Resolve(device.Capabilities, operands, TensorCoreApi.Auto) is not null
        && Ssd.SsdOp.WhyNotTensorCores(device.Capabilities, device.Name, operands) is null;

    /// <summary>
    /// The GEMM of a mode on <paramref name="device"/>: fp32-fast converts operands to scaled f16 copies first (range
    /// safety for gradients), bf16 lets the variant pick where they are rounded (bf16 has fp32's range), bf16 values
    /// as f16 are converted and scaled first.
    /// </summary>
    public static (GemmOperands Operands, OperandStaging Staging) GemmOf(Precision precision, GpuDevice device)
    {
        var operands = precision.Operands(device);
        return (operands, operands switch
        {
            GemmOperands.Fp32 => OperandStaging.InKernel,
            GemmOperands.Bf16 => OperandStaging.Auto,
            _ => OperandStaging.Converted,
        });
    }
}
