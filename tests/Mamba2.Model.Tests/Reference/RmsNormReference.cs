namespace Mamba2.Model.Tests.Reference;

/// <summary>
/// Float64 RMSNorm as mamba_ssm's rms_norm_ref: per row and group of <c>gs</c> channels,
/// h = x silu(z) (gate first) or x;  y = h / sqrt(mean(h^2) + eps) w (* silu(z) when the gate comes after).
/// Gradients by the chain rule, written out per group.
/// </summary>
public static class RmsNormReference
{
    private static double Silu(double v) => v / (1 + Math.Exp(-v));

    /// <summary>h at element j: x gated first, or x.</summary>
    private static double H(double[] x, double[]? z, int j, bool after) => z is not null && !after ? x[j] * Silu(z[j]) : x[j];

    /// <summary>1 / rms of h over the group starting at g0.</summary>
    private static double Rstd(double[] x, double[]? z, int g0, int gs, double eps, bool after)
    {
        double ss = 0;
        for (var j = g0; j < g0 + gs; j++)
        {
            var h = H(x, z, j, after);
            ss += h * h;
        }

        return 1 / Math.Sqrt(ss / gs + eps);
    }

    public static double[] Forward(double[] x, double[] w, double[]? z, double eps, int dim, int gs, bool after)
    {
        var y = new double[x.Length];
        for (var g0 = 0; g0 < x.Length; g0 += gs)
        {
            var r = Rstd(x, z, g0, gs, eps, after);
            for (var j = g0; j < g0 + gs; j++)
            {
                y[j] = H(x, z, j, after) * r * w[j % dim] * (z is not null && after ? Silu(z[j]) : 1);
            }
        }

        return y;
    }

    /// <summary>
    /// The size of the terms each weight gradient sums, sum over rows of |dy h r gate|: a sum over rows cancels, and
    /// its error follows the terms (the rounding they carry from upstream), not what is left of them.
    /// </summary>
    public static double[] WeightTermScale(double[] dy, double[] x, double[]? z, double eps, int dim, int gs, bool after)
    {
        var scale = new double[dim];
        for (var g0 = 0; g0 < x.Length; g0 += gs)
        {
            var r = Rstd(x, z, g0, gs, eps, after);
            for (var j = g0; j < g0 + gs; j++)
            {
                scale[j % dim] += Math.Abs(dy[j] * H(x, z, j, after) * r * (z is not null && after ? Silu(z[j]) : 1));
            }
        }

        return scale;
    }

    public static (double[] Dx, double[] Dw, double[]? Dz) Backward(double[] dy, double[] x, double[] w, double[]? z, double eps, int dim, int gs, bool after)
    {
        var dx = new double[x.Length];
        var dw = new double[dim];
        var dz = z is null ? null : new double[x.Length];
        var h = new double[gs];
        var dh = new double[gs];
        for (var g0 = 0; g0 < x.Length; g0 += gs)
        {
            double ss = 0;
            for (var j = 0; j < gs; j++)
            {
                h[j] = z is not null && !after ? x[g0 + j] * Silu(z[g0 + j]) : x[g0 + j];
                ss += h[j] * h[j];
            }

            var ms = ss / gs + eps;
            var r = 1 / Math.Sqrt(ms);
            // y_j = h_j r w_j g_j with g_j the after-gate (1 otherwise); dr/dh_k = -r^3 h_k / gs.
            double dr = 0;
            for (var j = 0; j < gs; j++)
            {
                var o = g0 + j;
                var gate = z is not null && after ? Silu(z[o]) : 1;
                dw[o % dim] += dy[o] * h[j] * r * gate;
                dh[j] = dy[o] * r * w[o % dim] * gate;
                dr += dy[o] * h[j] * w[o % dim] * gate;
                if (z is not null && after)
                {
                    var s = 1 / (1 + Math.Exp(-z[o]));
                    dz![o] = dy[o] * h[j] * r * w[o % dim] * s * (1 + z[o] * (1 - s));
                }
            }

            for (var j = 0; j < gs; j++)
            {
                var o = g0 + j;
                var dhj = dh[j] + dr * (-r * r * r * h[j] / gs);
                if (z is not null && !after)
                {
                    var s = 1 / (1 + Math.Exp(-z[o]));
                    dx[o] = dhj * z[o] * s;
                    dz![o] = dhj * x[o] * s * (1 + z[o] * (1 - s));
                }
                else
                {
                    dx[o] = dhj;
                }
            }
        }

        return (dx, dw, dz);
    }
}
