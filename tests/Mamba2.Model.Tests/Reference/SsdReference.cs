namespace Mamba2.Model.Tests.Reference;

/// <summary>Inputs of one SSD call on the host, row-major, shapes as in mamba_chunk_scan_combined.</summary>
public sealed record SsdCase(
    int Batch, int SeqLen, int Heads, int HeadDim, int Groups, int DState, int Chunk,
    float[] X, float[] Dt, float[] A, float[] B, float[] C,
    float[]? D, bool DPerHeadDim, float[]? Z, float[]? DtBias, float[]? InitialStates,
    bool DtSoftplus, float DtMin, float DtMax)
{
    /// <summary>Causal, or a bidirectional form (then D may be per token and the reverse scan may have its own tensors).</summary>
    public Mamba2.Model.Ops.Ssd.SsdDirection Direction { get; init; }

    /// <summary>D has shape (b, L, h) (bidirectional forms only).</summary>
    public bool DPerToken { get; init; }

    public float[]? DtRev { get; init; }

    public float[]? BRev { get; init; }

    public float[]? CRev { get; init; }

    /// <summary>The tensors in float64 (what the reference computes on; finite differences perturb these).</summary>
    public SsdTensors64 ToFloat64() => new(
        Widen(X), Widen(Dt), Widen(A), Widen(B), Widen(C), WidenOrNull(D), WidenOrNull(Z), WidenOrNull(DtBias), WidenOrNull(InitialStates))
    {
        DtRev = WidenOrNull(DtRev),
        BRev = WidenOrNull(BRev),
        CRev = WidenOrNull(CRev),
    };

    private static double[] Widen(float[] a) => Array.ConvertAll(a, v => (double)v);

    private static double[]? WidenOrNull(float[]? a) => a is null ? null : Widen(a);
}

/// <summary>The tensors of an <see cref="SsdCase"/> in float64; also the shape of a full set of gradients.</summary>
public sealed record SsdTensors64(double[] X, double[] Dt, double[] A, double[] B, double[] C,
    double[]? D, double[]? Z, double[]? DtBias, double[]? InitialStates)
{
    public double[]? DtRev { get; init; }

    /// <summary>
    /// Gradients only: per head, the sum over every step of dt a sum |dS S| (each product of &lt;dS, S&gt; taken by its
    /// size), the terms that grad_A adds up. Those terms have both signs, so grad_A, and each step's dot, can be a
    /// small remainder of large ones; an fp32 path's error is relative to the terms (each ~3e-7 relative on the GPU),
    /// so grad_A is judged against this size, not its own.
    /// </summary>
    public double[]? ATermScale { get; init; }

    /// <summary>Gradients only: per head, the sum over every step of the sizes of the terms of d dt_bias, the size grad_dt_bias is judged against.</summary>
    public double[]? DtBiasTermScale { get; init; }

    /// <summary>Gradients only: per element of D, the sum of |g x| over the positions (and p) it scales.</summary>
    public double[]? DTermScale { get; init; }

    public double[]? BRev { get; init; }

    public double[]? CRev { get; init; }

    /// <summary>
    /// The size an input's gradient error is judged against: for the sums over every step (A, dt_bias, D), the size
    /// of their terms; else the gradient itself.
    /// </summary>
    public double[] ErrorScale(string name, double[] gradient) => name switch
    {
        "A" when ATermScale is { } s => s,
        "dt_bias" when DtBiasTermScale is { } s => s,
        "D" when DTermScale is { } s && s.Length == gradient.Length => s,
        _ => gradient,
    };

    /// <summary>Every tensor with the name of its input (mamba_ssm's, then dt_rev, B_rev, C_rev), absent ones skipped.</summary>
    public IEnumerable<(string Name, double[] Data)> Named()
    {
        var all = new[]
        {
            ("x", X), ("dt", Dt), ("A", A), ("B", B), ("C", C), ("D", D), ("z", Z), ("dt_bias", DtBias), ("initial_states", InitialStates),
            ("dt_rev", DtRev), ("B_rev", BRev), ("C_rev", CRev),
        };
        foreach (var (name, data) in all)
        {
            if (data is not null)
            {
                yield return (name, data);
            }
        }
    }
}

/// <summary>
/// Float64 reference of the SSD forward written as the plain recurrence (not the chunked algorithm):
///   dt_t = clamp(softplus(dt_t + dt_bias)), S_t = exp(dt_t A) S_{t-1} + dt_t x_t B_t^T,
///   y_t = S_t C_t + D x_t, y_t *= silu(z_t).
/// </summary>
public static class SsdReference
{
    /// <summary>The raw dt + bias, and dt after softplus and clamp.</summary>
    public static (double Raw, double Softplussed, double Dt) ProcessDt(SsdCase c, SsdTensors64 v, int b, int t, int h)
    {
        var raw = v.Dt[(b * c.SeqLen + t) * c.Heads + h];
        if (v.DtBias is not null)
        {
            raw += v.DtBias[h];
        }

        var sp = c.DtSoftplus && raw <= 20 ? Math.Log(1 + Math.Exp(raw)) : raw;
        return (raw, sp, Math.Min(Math.Max(sp, c.DtMin), c.DtMax));
    }

    public static (double[] Y, double[] FinalStates) Forward(SsdCase c) => Forward(c, c.ToFloat64());

    public static (double[] Y, double[] FinalStates) Forward(SsdCase c, SsdTensors64 v)
    {
        int L = c.SeqLen, H = c.Heads, P = c.HeadDim, G = c.Groups, N = c.DState;
        var y = new double[c.Batch * L * H * P];
        var final = new double[c.Batch * H * P * N];
        var state = new double[P * N];
        for (var b = 0; b < c.Batch; b++)
        {
            for (var h = 0; h < H; h++)
            {
                var g = h / (H / G);
                for (var i = 0; i < P * N; i++)
                {
                    state[i] = v.InitialStates is null ? 0 : v.InitialStates[((b * H + h) * P * N) + i];
                }

                for (var t = 0; t < L; t++)
                {
                    var dt = ProcessDt(c, v, b, t, h).Dt;
                    var decay = Math.Exp(dt * v.A[h]);
                    var bc = ((b * L + t) * G + g) * N;
                    var xo = ((b * L + t) * H + h) * P;
                    for (var pi = 0; pi < P; pi++)
                    {
                        var xv = v.X[xo + pi];
                        double acc = 0;
                        for (var ni = 0; ni < N; ni++)
                        {
                            var s = decay * state[pi * N + ni] + dt * xv * v.B[bc + ni];
                            state[pi * N + ni] = s;
                            acc += s * v.C[bc + ni];
                        }

                        if (v.D is not null)
                        {
                            acc += v.D[c.DPerHeadDim ? h * P + pi : h] * xv;
                        }

                        if (v.Z is not null)
                        {
                            var zv = v.Z[xo + pi];
                            acc *= zv / (1 + Math.Exp(-zv));
                        }

                        y[xo + pi] = acc;
                    }
                }

                Array.Copy(state, 0, final, (b * H + h) * P * N, P * N);
            }
        }

        return (y, final);
    }
}
