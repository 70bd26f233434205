using Mamba2.Tests;

namespace Mamba2.Model.Tests.Reference;

/// <summary>Random SSD inputs for the forward and backward tests.</summary>
public static class SsdCases
{
    /// <summary>
    /// Random inputs; <paramref name="decay"/> scales A (large: strongly decaying, tiny: nearly constant state);
    /// <paramref name="negativeDt"/> flips the sign of every third raw dt (without softplus, the default clamp
    /// then zeroes them, as mamba_ssm's).
    /// </summary>
    public static SsdCase Make(Random rng, int b, int l, int h, int p, int g, int n, int q,
        bool d = false, bool dPerP = false, bool z = false, bool bias = false, bool init = false,
        bool softplus = false, float dtMin = 0f, float dtMax = float.PositiveInfinity, double decay = 1.0, bool negativeDt = false)
    {
        float[] R(long count, double lo, double hi) => TestMath.Uniform(rng, count, lo, hi);
        var dt = softplus ? R((long)b * l * h, -4, 1) : R((long)b * l * h, 0.01, 0.3);
        for (var i = 0; negativeDt && i < dt.Length; i += 3)
        {
            dt[i] = -dt[i];
        }

        var c = new SsdCase(b, l, h, p, g, n, q,
            X: R((long)b * l * h * p, -1, 1),
            Dt: dt,
            A: R(h, -2 * decay, -0.2 * decay),
            B: R((long)b * l * g * n, -1, 1),
            C: R((long)b * l * g * n, -1, 1),
            D: d ? R(dPerP ? h * p : h, -1, 1) : null, DPerHeadDim: dPerP,
            Z: z ? R((long)b * l * h * p, -3, 3) : null,
            DtBias: bias ? R(h, -1, 0.5) : null,
            InitialStates: init ? R((long)b * h * p * n, -1, 1) : null,
            DtSoftplus: softplus, DtMin: dtMin, DtMax: dtMax);
        AwayFromTheClamp(c.Dt, c);
        return c;
    }

    /// <summary>
    /// Moves raw dt values whose dt (after bias and softplus) lands within 1e-4 (relative) of dt_limit's bounds:
    /// there the clamp's gradient jumps between 0 and 1, and fp32 and float64 may fall on different sides
    /// (seed 739534512 gave grad_dt 3.6e-3 off the reference that way).
    /// </summary>
    public static void AwayFromTheClamp(float[] dt, SsdCase c)
    {
        if (c.DtMin <= 0 && float.IsPositiveInfinity(c.DtMax))
        {
            return;
        }

        for (var i = 0; i < dt.Length; i++)
        {
            for (var tries = 0; tries < 8; tries++)
            {
                var v = (double)dt[i] + (c.DtBias?[i % c.Heads] ?? 0);
                var sp = c.DtSoftplus ? (v > 20 ? v : Math.Log(1 + Math.Exp(v))) : v;
                if (Math.Abs(sp - c.DtMin) > 1e-4 * Math.Max(c.DtMin, 1e-6) && Math.Abs(sp - c.DtMax) > 1e-4 * c.DtMax)
                {
                    break;
                }

                dt[i] += 1e-2f;
            }
        }
    }

    /// <summary>
    /// A bidirectional case: <paramref name="dPerToken"/> gives D the shape (b, L, h) (otherwise D is (h) when
    /// <paramref name="d"/>); <paramref name="reverseTensors"/> gives the reverse scan its own dt, B and C.
    /// </summary>
    public static SsdCase Bidirectional(Random rng, Mamba2.Model.Ops.Ssd.SsdDirection direction, int b, int l, int h, int p, int g, int n, int q,
        bool d = false, bool dPerToken = false, bool z = false, bool bias = false, bool softplus = false, bool reverseTensors = false,
        float dtMin = 0f, float dtMax = float.PositiveInfinity, bool dPerP = false)
    {
        var c = Make(rng, b, l, h, p, g, n, q, d: d && !dPerToken, dPerP: dPerP, z: z, bias: bias, softplus: softplus, dtMin: dtMin, dtMax: dtMax);
        float[] R(long count, double lo, double hi) => TestMath.Uniform(rng, count, lo, hi);
        var dtRev = reverseTensors ? (softplus ? R((long)b * l * h, -4, 1) : R((long)b * l * h, 0.01, 0.3)) : null;
        if (dtRev is not null)
        {
            AwayFromTheClamp(dtRev, c);
        }

        return c with
        {
            Direction = direction,
            D = dPerToken ? R((long)b * l * h, -1, 1) : c.D,
            DPerToken = dPerToken,
            DtRev = dtRev,
            BRev = reverseTensors ? R((long)b * l * g * n, -1, 1) : null,
            CRev = reverseTensors ? R((long)b * l * g * n, -1, 1) : null,
        };
    }
}
