using System.Runtime.InteropServices;
using Mamba2.Vulkan;

namespace Mamba2.Model.Ops;

/// <summary>Fixed-order sums (nn/reduce_sum.comp): the same inputs give the same bits.</summary>
internal static class Reductions
{
    [StructLayout(LayoutKind.Sequential)]
    private readonly record struct Push(uint Segments, uint Rows, uint Outs, uint Inner, uint RowsPerBlock);

    /// <summary>
    /// output[seg, block, o] = sum over a block of rows of a (times b when given), a viewed as (segments, rows, outs, inner);
    /// with <paramref name="accumulate"/>, output[seg, block, o] += that sum; <paramref name="bf16Inputs"/>: a and b are bf16 tensors.
    /// </summary>
    public static void Blocks(CommandStream st, BufferBinding a, BufferBinding output, uint segments, uint rows, uint outs, uint inner,
        uint rowsPerBlock, BufferBinding? product = null, bool accumulate = false, bool bf16Inputs = false)
    {
        var device = st.Device;
        var local = Shaders.Local1D(device);
        var kernel = device.GetKernel(bf16Inputs ? Shaders.ReduceSumBf16 : Shaders.ReduceSum, new ReduceSumSpec(local, product is not null, accumulate));
        var blocks = (rows + rowsPerBlock - 1) / rowsPerBlock;
        st.Dispatch(kernel, (Shaders.Groups1D(device, (long)segments * blocks * outs, local), 1, 1),
            new Push(segments, rows, outs, inner, rowsPerBlock), a, product ?? a, output);
    }

    /// <summary>Rows one invocation adds in a level of <see cref="Sum"/>.</summary>
    private const uint SumBlockRows = 32;

    /// <summary>
    /// output[o] = sum over the rows of a (rows, outs): in levels of <see cref="SumBlockRows"/> rows, each a fixed order.
    /// One level over every row ran a chain of `rows` dependent loads on only `outs` invocations: 1,024 rows of weight-
    /// gradient partials took longer than the pass that made them (docs/PERF.md).
    /// </summary>
    public static void Sum(CommandStream st, BufferBinding a, BufferBinding output, uint rows, uint outs)
    {
        if (rows <= SumBlockRows)
        {
            Blocks(st, a, output, 1, rows, outs, 1, rows);
            return;
        }

        var blocks = (rows + SumBlockRows - 1) / SumBlockRows;
        var partial = st.Own(st.Device.CreateBuffer<float>((long)blocks * outs, "sum_blocks"));
        Blocks(st, a, partial, 1, rows, outs, 1, SumBlockRows);
        Sum(st, partial, output, blocks, outs);
    }

    /// <summary>
    /// output[o] = sum over the rows and the inner index of a (rows, outs, inner): first over the rows for every
    /// (o, k), then over k. One pass adding rows x inner terms per output ran chains that long on only outs
    /// invocations: dD for D (h) at the 370m shape, 4,096 adds on each of 32 (most of the backward's 0.37 ms
    /// reduce stage on an H200).
    /// </summary>
    public static void SumRowsThenInner(CommandStream st, BufferBinding a, BufferBinding output, uint rows, uint outs, uint inner)
    {
        if (inner == 1)
        {
            Sum(st, a, output, rows, outs);
            return;
        }

        var overRows = st.Own(st.Device.CreateBuffer<float>((long)outs * inner, "sum_over_rows"));
        Sum(st, a, overRows, rows, outs * inner);
        Blocks(st, overRows, output, 1, 1, outs, inner, 1);
    }
}
