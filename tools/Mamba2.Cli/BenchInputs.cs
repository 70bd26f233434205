namespace Mamba2.Cli;

/// <summary>Fresh random benchmark inputs (never zeros, which would flatter some kernels).</summary>
internal static class BenchInputs
{
    public static float[] Uniform(Random rng, long n, double lo, double hi)
    {
        if (n > Array.MaxLength)
        {
            throw new ArgumentException($"the shape asks for an input of {n} elements, more than one array holds ({Array.MaxLength}): pick a smaller shape.");
        }

        var a = new float[n];
        for (long i = 0; i < n; i++)
        {
            a[i] = (float)(lo + (hi - lo) * rng.NextDouble());
        }

        return a;
    }
}
