namespace Mamba2.Model.IO;

/// <summary>Sizes, kinds and header names of <see cref="SafetensorsDType"/>.</summary>
public static class SafetensorsDTypes
{
    public static IReadOnlyList<SafetensorsDType> Supported { get; } = Array.AsReadOnly(Enum.GetValues<SafetensorsDType>());

    /// <summary>"F64, F32, F16, BF16, I64, I32", for error messages.</summary>
    public static string SupportedList { get; } = string.Join(", ", Supported.Select(HeaderName));

    public static int ElementSize(this SafetensorsDType dtype) => dtype switch
    {
        SafetensorsDType.F64 or SafetensorsDType.I64 => 8,
        SafetensorsDType.F32 or SafetensorsDType.I32 => 4,
        SafetensorsDType.F16 or SafetensorsDType.BF16 => 2,
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "Unknown safetensors dtype."),
    };

    public static bool IsFloatingPoint(this SafetensorsDType dtype) =>
        dtype is SafetensorsDType.F64 or SafetensorsDType.F32 or SafetensorsDType.F16 or SafetensorsDType.BF16;

    /// <summary>The dtype string used in safetensors headers.</summary>
    public static string HeaderName(this SafetensorsDType dtype) => dtype switch
    {
        SafetensorsDType.F64 => "F64",
        SafetensorsDType.F32 => "F32",
        SafetensorsDType.F16 => "F16",
        SafetensorsDType.BF16 => "BF16",
        SafetensorsDType.I64 => "I64",
        SafetensorsDType.I32 => "I32",
        _ => throw new ArgumentOutOfRangeException(nameof(dtype), dtype, "Unknown safetensors dtype."),
    };

    /// <summary>Exact, case-sensitive match of a header dtype string (Enum.TryParse would also accept "1" or "f32").</summary>
    public static bool TryParse(string text, out SafetensorsDType dtype)
    {
        foreach (var candidate in Supported)
        {
            if (candidate.HeaderName() == text)
            {
                dtype = candidate;
                return true;
            }
        }

        dtype = default;
        return false;
    }
}
