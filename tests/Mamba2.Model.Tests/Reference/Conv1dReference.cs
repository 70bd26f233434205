namespace Mamba2.Model.Tests.Reference;

/// <summary>
/// Float64 depthwise convolution over the sequence, channels last, written as the plain sum:
/// u[b, t, c] = bias[c] + sum_k w[c, k] x[b, t + k - left, c] (zero outside), y = silu(u) or u; and its gradients by
/// the chain rule term by term.
/// </summary>
public static class Conv1dReference
{
    public static double[] Forward(double[] x, double[] w, double[]? bias, int b, int l, int c, int k, int left, bool silu)
    {
        var y = new double[x.Length];
        for (var i = 0; i < y.Length; i++)
        {
            var u = Pre(x, w, bias, l, c, k, left, i);
            y[i] = silu ? u / (1 + Math.Exp(-u)) : u;
        }

        return y;
    }

    public static (double[] Dx, double[] Dw, double[]? Dbias) Backward(double[] dy, double[] x, double[] w, double[]? bias,
        int b, int l, int c, int k, int left, bool silu) =>
        Accumulate(dy, x, w, bias, l, c, k, left, silu, magnitudes: false);

    /// <summary>
    /// The size of the terms the weight and bias gradients sum, |du x| and |du| over every row: sums over rows
    /// cancel, and their error follows the terms (the rounding they carry from upstream), not what is left of them.
    /// </summary>
    public static (double[] Dw, double[]? Dbias) ParameterTermScales(double[] dy, double[] x, double[] w, double[]? bias,
        int b, int l, int c, int k, int left, bool silu)
    {
        var (_, dw, db) = Accumulate(dy, x, w, bias, l, c, k, left, silu, magnitudes: true);
        return (dw, db);
    }

    /// <summary>The backward's sums, or with <paramref name="magnitudes"/> the sums of the parameter terms' magnitudes.</summary>
    private static (double[] Dx, double[] Dw, double[]? Dbias) Accumulate(double[] dy, double[] x, double[] w, double[]? bias,
        int l, int c, int k, int left, bool silu, bool magnitudes)
    {
        double Term(double v) => magnitudes ? Math.Abs(v) : v;
        var dx = new double[x.Length];
        var dw = new double[w.Length];
        var db = bias is null ? null : new double[c];
        for (var i = 0; i < x.Length; i++)
        {
            var ch = i % c;
            var t = i / c % l;
            var bi = i / c / l;
            var du = dy[i];
            if (silu)
            {
                var u = Pre(x, w, bias, l, c, k, left, i);
                var sg = 1 / (1 + Math.Exp(-u));
                du *= sg * (1 + u * (1 - sg));
            }

            if (db is not null)
            {
                db[ch] += Term(du);
            }

            for (var kk = 0; kk < k; kk++)
            {
                var s = t + kk - left;
                if (s >= 0 && s < l)
                {
                    var xi = ((bi * l) + s) * c + ch;
                    dw[ch * k + kk] += Term(du * x[xi]);
                    dx[xi] += du * w[ch * k + kk];
                }
            }
        }

        return (dx, dw, db);
    }

    private static double Pre(double[] x, double[] w, double[]? bias, int l, int c, int k, int left, int i)
    {
        var ch = i % c;
        var t = i / c % l;
        var bi = i / c / l;
        var u = bias is null ? 0 : bias[ch];
        for (var kk = 0; kk < k; kk++)
        {
            var s = t + kk - left;
            if (s >= 0 && s < l)
            {
                u += w[ch * k + kk] * x[((bi * l) + s) * c + ch];
            }
        }

        return u;
    }
}
