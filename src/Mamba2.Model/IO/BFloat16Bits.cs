namespace Mamba2.Model.IO;

/// <summary>bfloat16 is the upper half of an IEEE float32; these convert between the two with correct rounding.</summary>
internal static class BFloat16Bits
{
    public static float ToSingle(ushort bits) => BitConverter.UInt32BitsToSingle((uint)bits << 16);

    /// <summary>Round to nearest, ties to even; NaN stays NaN (with its sign).</summary>
    public static ushort FromSingle(float value)
    {
        var bits = BitConverter.SingleToUInt32Bits(value);
        if (float.IsNaN(value))
        {
            // Truncating a NaN whose payload sits only in the low 16 bits would give Inf; force the quiet bit.
            return (ushort)((bits >> 16) | 0x0040);
        }

        var roundingBias = 0x7FFFu + ((bits >> 16) & 1);
        return (ushort)((bits + roundingBias) >> 16);
    }

    /// <summary>Correctly rounded double to bfloat16.</summary>
    public static ushort FromDouble(double value)
    {
        // double -> float -> bf16 rounds twice and can turn a value just above a bf16 tie into an exact tie.
        // Rounding the first step to odd instead keeps the information the second rounding needs.
        var f = (float)value;
        if (float.IsFinite(f) && (double)f != value)
        {
            var bits = BitConverter.SingleToInt32Bits(f);
            if ((bits & 1) == 0)
            {
                // Step to the other float neighbour of value, which is the odd one; the sign bit is unaffected.
                bits += Math.Abs((double)f) > Math.Abs(value) ? -1 : 1;
                f = BitConverter.Int32BitsToSingle(bits);
            }
        }

        return FromSingle(f);
    }
}
