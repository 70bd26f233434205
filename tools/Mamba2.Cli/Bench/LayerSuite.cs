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
