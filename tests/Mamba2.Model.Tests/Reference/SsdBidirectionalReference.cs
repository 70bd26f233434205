using Mamba2.Model.Ops.Ssd;

namespace Mamba2.Model.Tests.Reference;

/// <summary>
/// Float64 reference of the bidirectional SSD as the naive composition docs/DESIGN.md defines it: two causal runs of
/// the plain recurrence, the second on flipped inputs, combined as
///   sum   (Bi-Mamba2): y = SS(x) + flip(SS(flip(x))) + D x
///   shift (Hydra):     y = shift(SS(x)) + flip(shift(SS_rev(flip(x)))) + D x,  shift(u)[t] = u[t - 1], shift(u)[0] = 0
/// then gated by silu(z). The reverse run uses dt_rev, B_rev, C_rev when given. Gradients compose the causal
/// reference's the same way (the adjoint of a flip is a flip, of a shift the opposite shift).
/// </summary>
public static class SsdBidirectionalReference
{
    public static (double[] Y, double[] FinalStates) Forward(SsdCase c, SsdTensors64 v)
    {
        var (causal, vf, vr) = Parts(c, v);
        var (yf, final) = SsdReference.Forward(causal, vf);
        var (yr, _) = SsdReference.Forward(causal, vr);
        var yPre = Combine(c, v, yf, yr);
        var y = (double[])yPre.Clone();
        if (v.Z is not null)
        {
            for (var i = 0; i < y.Length; i++)
            {
                y[i] *= v.Z[i] / (1 + Math.Exp(-v.Z[i]));
            }
        }

        return (y, final);
    }

    public static SsdTensors64 Gradients(SsdCase c, SsdTensors64 v, double[] dy, double[]? dFinal)
    {
        var (causal, vf, vr) = Parts(c, v);
        var (yf, _) = SsdReference.Forward(causal, vf);
        var (yr, _) = SsdReference.Forward(causal, vr);
        var yPre = Combine(c, v, yf, yr);
        var g = (double[])dy.Clone();
        double[]? dz = null;
        if (v.Z is not null)
        {
            dz = new double[g.Length];
            for (var i = 0; i < g.Length; i++)
            {
                var zv = v.Z[i];
                var sg = 1 / (1 + Math.Exp(-zv));
                dz[i] = dy[i] * yPre[i] * sg * (1 + zv * (1 - sg));
                g[i] = dy[i] * zv * sg;
            }
        }

        int b = c.Batch, l = c.SeqLen, h = c.Heads, p = c.HeadDim, row = h * p;
        var shift = c.Direction == SsdDirection.BidirectionalShift ? 1 : 0;
        // Forward run's output at t went to t + shift; the reverse run's output at i went to L - 1 - i - shift.
        var gf = Remap(g, b, l, row, t => t + shift);
        var gr = Remap(g, b, l, row, i => l - 1 - i - shift);
        var f = SsdReferenceBackward.Gradients(causal, vf, gf, dFinal);
        var r = SsdReferenceBackward.Gradients(causal, vr, gr, null);

        double[] Flip(double[] a, int rowLength) => Remap(a, b, l, rowLength, t => l - 1 - t);
        double[] Add(double[] a, double[] bb) => a.Zip(bb, (u, w) => u + w).ToArray();
        var dx = Add(f.X, Flip(r.X, row));
        double[]? dD = null, dScale = null;
        if (v.D is not null)
        {
            dD = new double[v.D.Length];
            dScale = new double[v.D.Length];
            for (var i = 0; i < g.Length; i++)
            {
                var di = DIndex(c, i);
                dx[i] += v.D[di] * g[i];
                dD[di] += g[i] * v.X[i];
                dScale[di] += Math.Abs(g[i] * v.X[i]);
            }
        }

        var dtRevGrad = Flip(r.Dt, h);
        var bRevGrad = Flip(r.B, c.Groups * c.DState);
        var cRevGrad = Flip(r.C, c.Groups * c.DState);
        return new SsdTensors64(dx,
            v.DtRev is null ? Add(f.Dt, dtRevGrad) : f.Dt,
            Add(f.A, r.A),
            v.BRev is null ? Add(f.B, bRevGrad) : f.B,
            v.CRev is null ? Add(f.C, cRevGrad) : f.C,
            dD, dz, f.DtBias is null ? null : Add(f.DtBias, r.DtBias!), null)
        {
            DtRev = v.DtRev is null ? null : dtRevGrad,
            BRev = v.BRev is null ? null : bRevGrad,
            CRev = v.CRev is null ? null : cRevGrad,
            ATermScale = Add(f.ATermScale!, r.ATermScale!),
            DtBiasTermScale = Add(f.DtBiasTermScale!, r.DtBiasTermScale!),
            DTermScale = dScale,
        };
    }

    /// <summary>The causal case both runs use, the forward run's tensors and the reverse run's (flipped) tensors.</summary>
    private static (SsdCase Causal, SsdTensors64 Forward, SsdTensors64 Reverse) Parts(SsdCase c, SsdTensors64 v)
    {
        int b = c.Batch, l = c.SeqLen, h = c.Heads, gn = c.Groups * c.DState;
        double[] Flip(double[] a, int row) => Remap(a, b, l, row, t => l - 1 - t);
        var causal = c with { D = null, Z = null, InitialStates = null, Direction = SsdDirection.Causal, DPerToken = false, DtRev = null, BRev = null, CRev = null };
        var forward = new SsdTensors64(v.X, v.Dt, v.A, v.B, v.C, null, null, v.DtBias, null);
        var reverse = new SsdTensors64(Flip(v.X, h * c.HeadDim), Flip(v.DtRev ?? v.Dt, h), v.A, Flip(v.BRev ?? v.B, gn), Flip(v.CRev ?? v.C, gn),
            null, null, v.DtBias, null);
        return (causal, forward, reverse);
    }

    private static double[] Combine(SsdCase c, SsdTensors64 v, double[] yf, double[] yr)
    {
        int b = c.Batch, l = c.SeqLen, row = c.Heads * c.HeadDim;
        var shift = c.Direction == SsdDirection.BidirectionalShift ? 1 : 0;
        var fromForward = Remap(yf, b, l, row, t => t - shift);
        var fromReverse = Remap(yr, b, l, row, t => l - 1 - t - shift);
        var y = new double[yf.Length];
        for (var i = 0; i < y.Length; i++)
        {
            y[i] = fromForward[i] + fromReverse[i] + (v.D is null ? 0 : v.D[DIndex(c, i)] * v.X[i]);
        }

        return y;
    }

    /// <summary>The element of D that multiplies x element <paramref name="i"/> (D (h), (h, p) or (b, L, h)).</summary>
    private static int DIndex(SsdCase c, int i)
    {
        var row = i / c.HeadDim;   // (b * L + t) * h + head
        var head = row % c.Heads;
        return c.DPerToken ? row : c.DPerHeadDim ? head * c.HeadDim + i % c.HeadDim : head;
    }

    /// <summary>out[b, t, :] = a[b, src(t), :], zero where src(t) is outside [0, L).</summary>
    private static double[] Remap(double[] a, int batch, int l, int row, Func<int, int> src)
    {
        var output = new double[a.Length];
        for (var b = 0; b < batch; b++)
        {
            for (var t = 0; t < l; t++)
            {
                var s = src(t);
                if (s >= 0 && s < l)
                {
                    Array.Copy(a, ((b * l) + s) * row, output, ((b * l) + t) * row, row);
                }
            }
        }

        return output;
    }
}
