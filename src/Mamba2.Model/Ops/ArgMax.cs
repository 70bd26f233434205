using System.Runtime.InteropServices;
using Mamba2.Model.Tensors;
using Mamba2.Vulkan;

namespace Mamba2.Model.Ops;

/// <summary>The index of each row's largest value, computed where the values are.</summary>
public static class ArgMax
{
    [StructLayout(LayoutKind.Sequential)]
    private readonly record struct Push(uint Rows, uint N);

    /// <summary>
    /// For x (..., n): the first index of each row's largest value, NaN never counting (a row of NaN gives 0), as a
    /// host array of the leading dimensions' size. Only these ints cross to the host, not the rows: a batch of
    /// LM logits is rows x vocab floats.
    /// </summary>
    public static int[] Rows(Tensor x)
    {
        ArgumentNullException.ThrowIfNull(x);
        var n = x.Shape[^1];
        var rows = x.Length / n;
        Shaders.EnsureBindable("ArgMax", x);
        var device = x.Device;
        using var output = device.CreateBuffer<int>(rows, "argmax");
        Shaders.RunIn(device, null, st => Record(st, x.Buffer, output, rows, n));
        return output.Download();
    }

    /// <summary>Records output[r] = argmax of row r of x (rows, n), both bound as given.</summary>
    internal static void Record(CommandStream st, BufferBinding x, BufferBinding output, long rows, int n)
    {
        var device = st.Device;
        var local = Shaders.RowLocal(device, n);
        st.Dispatch(device.GetKernel(Shaders.ArgMaxRows, new LocalSize(local)), (Shaders.Groups(device, rows), 1, 1),
            new Push((uint)rows, (uint)n), x, output);
    }
}
