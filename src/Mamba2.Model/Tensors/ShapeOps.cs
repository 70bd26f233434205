namespace Mamba2.Model.Tensors;

/// <summary>Shape arithmetic and the argument checks every op runs before anything reaches the GPU.</summary>
public static class ShapeOps
{
    public static string Format(IReadOnlyList<int> shape) => $"({string.Join(", ", shape)})";

    public static long Elements(IReadOnlyList<int> shape, string name)
    {
        if (shape.Count == 0)
        {
            throw new ArgumentException($"{name}: a tensor needs at least one dimension.");
        }

        long n = 1;
        foreach (var d in shape)
        {
            if (d <= 0)
            {
                throw new ArgumentException($"{name}: every dimension must be positive, got shape {Format(shape)}.");
            }

            n = checked(n * d);
        }

        return n;
    }

    /// <summary>Throws unless <paramref name="t"/> has exactly <paramref name="expected"/>.</summary>
    /// <summary>Columns [start, start + width) must lie inside a last dimension of <paramref name="cols"/> (a column view's range).</summary>
    internal static void ExpectColumns(string name, int cols, int start, int width)
    {
        if (start < 0 || width <= 0 || start + (long)width > cols)
        {
            throw new ArgumentOutOfRangeException(nameof(width), $"columns [{start}, {start + (long)width}) are not inside {name}'s {cols}.");
        }
    }

    public static void Expect(IShapedArray t, string argument, string op, params int[] expected)
    {
        if (!t.Shape.SequenceEqual(expected))
        {
            throw new ArgumentException($"{op}: {argument} must have shape {Format(expected)}, got {Format(t.Shape)}.", argument);
        }
    }

    public static void ExpectRank(IShapedArray t, string argument, string op, params int[] ranks)
    {
        if (!ranks.Contains(t.Rank))
        {
            throw new ArgumentException(
                $"{op}: {argument} must have rank {string.Join(" or ", ranks)}, got shape {Format(t.Shape)}.", argument);
        }
    }

    public static void ExpectSameDevice(string op, params IShapedArray[] tensors)
    {
        foreach (var t in tensors.Skip(1))
        {
            if (!ReferenceEquals(t.Device, tensors[0].Device))
            {
                throw new ArgumentException($"{op}: {t.Name} lives on another device than {tensors[0].Name}.");
            }
        }
    }
}
