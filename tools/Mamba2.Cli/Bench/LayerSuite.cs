using Mamba2.Model.Modules;
using Mamba2.Model.Ops;
using Mamba2.Model.Tensors;
using Mamba2.Vulkan;

namespace Mamba2.Cli;

/// <summary>
/// The Mamba2 layer rows of `bench` (d_model = h p / 2, mamba_ssm's defaults otherwise; causal and bidirectional,
/// forward and forward + backward with every parameter gradient) and the GEMM rows of its projections.
/// </summary>
internal static class LayerSuite
{
    public static IEnumerable<BenchRow> Rows(GpuDevice device, BenchShape s, IReadOnlyCollection<string> ops, Random rng, int warmup, int repeats,
        Precision precision)
    {
        var impl = BenchRow.WithPrecision("ours", precision);
        var config = new Mamba2Config(s.DModel) { DState = s.DState, HeadDim = s.HeadDim, NGroups = s.Groups, ChunkSize = s.Chunk };
        using var u = Tensor.FromArray(device, "u", BenchInputs.Uniform(rng, s.Tokens * s.DModel, -1, 1), s.Batch, s.SeqLen, s.DModel);
        if (ops.Contains("layer"))
        {
            using var dout = Tensor.FromArray(device, "dout", BenchInputs.Uniform(rng, s.Tokens * s.DModel, -1, 1), s.Batch, s.SeqLen, s.DModel);
            foreach (var causal in new[] { true, false })
            {
                var c = config with { Causal = causal };
                using var layer = Mamba2Layer.Initialize(device, c, rng);
                layer.Precision = precision;
                foreach (var backward in new[] { false, true })
                {
                    var t = RowTimer.Time(device, st =>
                    {
                        var acts = layer.Forward(u, st);
                        if (!backward)
                        {
                            return [acts];
                        }

                        var (du, grads) = layer.Backward(dout, acts, st);
                        return [acts, du, .. grads.Values];
                    }, warmup, repeats);
                    var (bytes, flops) = LayerCost(s, c, backward);
                    yield return BenchRow.Of(causal ? "mamba2 layer" : "mamba2 layer bidir", impl, backward, s, t, bytes, flops);
                }
            }
        }

        if (ops.Contains("norm"))
        {
            foreach (var row in NormRows(device, s, config, rng, warmup, repeats, impl))
            {
                yield return row;
            }
        }

        if (ops.Contains("conv"))
        {
            foreach (var row in ConvRows(device, s, config, rng, warmup, repeats, impl))
            {
                yield return row;
            }
        }

        if (ops.Contains("gemm"))
        {
            foreach (var (name, n, k) in new[] { ("gemm in_proj", config.DInProj, config.DModel), ("gemm out_proj", config.DModel, config.DInner) })
            {
                var rowsA = (int)s.Tokens;
                using var a = Tensor.FromArray(device, "a", BenchInputs.Uniform(rng, (long)rowsA * k, -1, 1), rowsA, k);
                using var w = Tensor.FromArray(device, "w", BenchInputs.Uniform(rng, (long)n * k, -1, 1), n, k);
                var t = RowTimer.Time(device, st =>
                {
                    var y = Tensor.Empty(device, "y", rowsA, n);
                    Gemm.Run(a, w, y, transposeB: true, stream: st, precision: precision);
                    return [y];
                }, warmup, repeats);
                var (bytes, flops) = BenchCost.Gemm(rowsA, n, k);
                yield return BenchRow.Of(name, impl, backward: false, s, t, bytes, flops);
            }
        }
    }

    /// <summary>
    /// The layer's gated norm (x = the SSD's output, z read in place from in_proj's output, the gate first as the layer
    /// runs it) and the plain norm of a block's input, forward and forward + backward with the weight's gradient.
    /// Bytes: each tensor read or written once per pass that needs it (forward x, z, y; backward dy, x, z, dx, dz);
    /// flops: per element the sum of squares and the scaling (4), the gate's product and silu (5 more), the backward
    /// about twice the forward's again.
    /// </summary>
    private static IEnumerable<BenchRow> NormRows(GpuDevice device, BenchShape s, Mamba2Config c, Random rng, int warmup, int repeats, string impl)
    {
        var rows = (int)s.Tokens;
        using var zxbcdt = Tensor.FromArray(device, "zxbcdt", BenchInputs.Uniform(rng, (long)rows * c.DInProj, -1, 1), rows, c.DInProj);
        foreach (var (name, dim, gated) in new[] { ("rmsnorm gated", c.DInner, true), ("rmsnorm", c.DModel, false) })
        {
            using var x = Tensor.FromArray(device, "x", BenchInputs.Uniform(rng, (long)rows * dim, -1, 1), rows, dim);
            using var dy = Tensor.FromArray(device, "dy", BenchInputs.Uniform(rng, (long)rows * dim, -1, 1), rows, dim);
            using var w = Tensor.FromArray(device, "w", BenchInputs.Uniform(rng, dim, 0.5, 1.5), dim);
            var z = gated ? new ColumnView(zxbcdt, 0, dim) : (ColumnView?)null;
            var groupSize = gated ? c.NormGroupSize : dim;
            foreach (var backward in new[] { false, true })
            {
                var t = RowTimer.Time(device, st =>
                {
                    var y = z is { } zv ? RmsNorm.Forward(x, w, zv, c.NormEps, groupSize, c.NormBeforeGate, st) : RmsNorm.Forward(x, w, eps: c.NormEps, stream: st);
                    if (!backward)
                    {
                        return [y];
                    }

                    var g = z is { } gz ? RmsNorm.Backward(dy, y, x, w, gz, groupSize, c.NormBeforeGate, null, st) : RmsNorm.Backward(dy, y, x, w, stream: st);
                    return [y, g];
                }, warmup, repeats);
                var tensors = gated ? (backward ? 3 + 8 : 3) : (backward ? 2 + 5 : 2);
                var perElement = (gated ? 9.0 : 4.0) * (backward ? 3 : 1);
                yield return BenchRow.Of(name, impl, backward, s, t, 4.0 * rows * dim * tensors, perElement * rows * dim);
            }
        }
    }

    /// <summary>
    /// The layer's depthwise causal conv with its SiLU as the layer runs it: xBC read in place from in_proj's output,
    /// x, B and C written as three tensors; the backward takes their gradients as parts and writes dxBC into the
    /// columns of in_proj's output gradient. Bytes: xBC and the outputs once (forward); the gradients, xBC and dxBC
    /// (backward). Flops: K multiply-adds and the SiLU per output, about twice that again backward.
    /// </summary>
    private static IEnumerable<BenchRow> ConvRows(GpuDevice device, BenchShape s, Mamba2Config c, Random rng, int warmup, int repeats, string impl)
    {
        int b = s.Batch, l = s.SeqLen, gn = c.NGroups * c.DState;
        using var zxbcdt = Tensor.FromArray(device, "zxbcdt", BenchInputs.Uniform(rng, s.Tokens * c.DInProj, -1, 1), b, l, c.DInProj);
        using var w = Tensor.FromArray(device, "conv1d.weight", BenchInputs.Uniform(rng, (long)c.ConvDim * c.DConv, -0.5, 0.5), c.ConvDim, 1, c.DConv);
        using var bias = Tensor.FromArray(device, "conv1d.bias", BenchInputs.Uniform(rng, c.ConvDim, -0.5, 0.5), c.ConvDim);
        Tensor Grad(string name, int width) => Tensor.FromArray(device, name, BenchInputs.Uniform(rng, s.Tokens * width, -1, 1), b, l, width);
        using var dx = Grad("dx", c.DInner);
        using var dB = Grad("dB", gn);
        using var dC = Grad("dC", gn);
        var xbc = new ColumnView(zxbcdt, c.DInner, c.ConvDim);
        foreach (var backward in new[] { false, true })
        {
            var t = RowTimer.Time(device, st =>
            {
                var outputs = new[] { Tensor.Empty(device, "x", b, l, c.DInner), Tensor.Empty(device, "B", b, l, gn), Tensor.Empty(device, "C", b, l, gn) };
                Conv1d.Forward(xbc, w, bias, outputs, Conv1dPadding.Causal, silu: true, st);
                if (!backward)
                {
                    return outputs;
                }

                var dIn = Tensor.Empty(device, "dzxbcdt", b, l, c.DInProj);
                var g = Conv1d.Backward([dx, dB, dC], xbc, w, bias, Conv1dPadding.Causal, silu: true, new ColumnView(dIn, c.DInner, c.ConvDim), st);
                return [.. outputs, dIn, g];
            }, warmup, repeats);
            var elements = (double)s.Tokens * c.ConvDim;
            yield return BenchRow.Of("conv1d", impl, backward, s, t, 4.0 * elements * (backward ? 2 + 3 : 2),
                (2.0 * c.DConv + 5) * elements * (backward ? 3 : 1));
        }
    }

    /// <summary>
    /// The projections' GEMMs (forward: 2 flops per weight and token; the backward twice that) plus the SSD's flops;
    /// bytes: u, each intermediate (zxBCdt, the conv output, y, the norm output) written and read once, the output; the
    /// backward about three times the forward's traffic.
    /// </summary>
    private static (double Bytes, double Flops) LayerCost(BenchShape s, Mamba2Config c, bool backward)
    {
        var proj = 2.0 * s.Tokens * ((double)c.DInProj * c.DModel + (double)c.DModel * c.DInner) * (backward ? 3 : 1);
        var perToken = 2.0 * c.DModel + 2.0 * c.DInProj + 2.0 * c.ConvDim + 4.0 * c.DInner;
        return (4.0 * s.Tokens * perToken * (backward ? 3 : 1), proj + BenchCost.SsdFlops(s, backward, !c.Causal));
    }
}
