namespace Mamba2.Model.Tensors;

/// <summary>
/// Columns [<see cref="Start"/>, <see cref="Start"/> + <see cref="Width"/>) of a tensor's last dimension: an operand a
/// kernel reads or writes in place inside a wider row-major tensor (the fused projection's z and xBC, their
/// gradients), so that no copy has to split or join them. A whole tensor converts to the view of all its columns.
/// </summary>
public readonly record struct ColumnView
{
    public ColumnView(Tensor tensor, int start, int width)
    {
        ArgumentNullException.ThrowIfNull(tensor);
        ShapeOps.ExpectColumns(tensor.Name, tensor.Shape[^1], start, width);

        Tensor = tensor;
        Start = start;
        Width = width;
    }

    public Tensor Tensor { get; }

    public int Start { get; }

    public int Width { get; }

    /// <summary>Elements from one row to the next (the tensor's last dimension).</summary>
    public int Stride => Tensor.Shape[^1];

    public long Rows => Tensor.Length / Stride;

    /// <summary>The view's own shape: the tensor's leading dimensions, then <see cref="Width"/>.</summary>
    public int[] Shape => [.. Tensor.Shape.Take(Tensor.Rank - 1), Width];

    public bool IsWhole => Width == Stride;

    public static implicit operator ColumnView(Tensor tensor) => new(tensor, 0, tensor.Shape[^1]);

    public override string ToString() => IsWhole ? Tensor.ToString() : $"{Tensor.Name}[..., {Start}:{Start + Width}]{ShapeOps.Format(Shape)}";
}
