using Mamba2.Model.Tensors;

namespace Mamba2.Model.Tests;

/// <summary>Fills outputs with NaN before a kernel runs, so any element it fails to write shows in the comparison.</summary>
public static class Poison
{
    public static void Fill(params IEnumerable<Tensor?> tensors)
    {
        foreach (var t in tensors)
        {
            t?.CopyFrom(Enumerable.Repeat(float.NaN, (int)t.Length).ToArray());
        }
    }
}
