namespace Mamba2.Model.Tests.Reference;

/// <summary>Inputs of one SSD call on the host, row-major, shapes as in mamba_chunk_scan_combined.</summary>
public sealed record SsdCase(
    int Batch, int SeqLen, int Heads, int HeadDim, int Groups, int DState, int Chunk,
    float[] X, float[] Dt, float[] A, float[] B, float[] C,
    float[]? D, bool DPerHeadDim, float[]? Z, float[]? DtBias, float[]? InitialStates,
    bool DtSoftplus, float DtMin, float DtMax);

/// <summary>
/// Float64 reference of the SSD forward written as the plain recurrence (not the chunked algorithm):
///   dt_t = clamp(softplus(dt_t + dt_bias)), S_t = exp(dt_t A) S_{t-1} + dt_t x_t B_t^T,
///   y_t = S_t C_t + D x_t, y_t *= silu(z_t).
/// </summary>
public static class SsdReference
{
    public static double ProcessDt(SsdCase c, int b, int t, int h)
    {
        double v = c.Dt[(b * c.SeqLen + t) * c.Heads + h];
        if (c.DtBias is not null)
        {
            v += c.DtBias[h];
        }

        if (c.DtSoftplus)
        {
            v = v <= 20 ? Math.Log(1 + Math.Exp(v)) : v;
        }

        return Math.Min(Math.Max(v, c.DtMin), c.DtMax);
    }

    public static (double[] Y, double[] FinalStates) Forward(SsdCase c)
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
                    state[i] = c.InitialStates is null ? 0 : c.InitialStates[((b * H + h) * P * N) + i];
                }

                for (var t = 0; t < L; t++)
                {
                    var dt = ProcessDt(c, b, t, h);
                    var decay = Math.Exp(dt * c.A[h]);
                    var bc = ((b * L + t) * G + g) * N;
                    var xo = ((b * L + t) * H + h) * P;
                    for (var pi = 0; pi < P; pi++)
                    {
                        double xv = c.X[xo + pi];
                        double acc = 0;
                        for (var ni = 0; ni < N; ni++)
                        {
                            var s = decay * state[pi * N + ni] + dt * xv * c.B[bc + ni];
                            state[pi * N + ni] = s;
                            acc += s * c.C[bc + ni];
                        }

                        if (c.D is not null)
                        {
                            acc += c.D[c.DPerHeadDim ? h * P + pi : h] * xv;
                        }

                        if (c.Z is not null)
                        {
                            double zv = c.Z[xo + pi];
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
