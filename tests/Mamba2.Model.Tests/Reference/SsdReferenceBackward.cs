namespace Mamba2.Model.Tests.Reference;

/// <summary>
/// Float64 gradients of the SSD by the adjoint of the plain recurrence, walked backwards in time (not the chunked
/// algorithm the kernels use). With g_t = dy_t silu(z_t) and dS the gradient of the state S_t:
///   dS += g_t C_t^T ; dC_t += S_t^T g_t ; dx_t += D g_t ; dD += g_t x_t
///   S_t = a_t S_{t-1} + dt_t x_t B_t^T:  dx_t += dt_t dS B_t ; dB_t += dt_t dS^T x_t ;
///   d dt_t = x_t^T dS B_t + A a_t &lt;dS, S_{t-1}&gt; ; dA += dt_t a_t &lt;dS, S_{t-1}&gt; ; dS = a_t dS
/// then d dt through the clamp, softplus and bias as mamba_ssm; d initial_states = dS at the start.
/// </summary>
public static class SsdReferenceBackward
{
    public static SsdTensors64 Gradients(SsdCase c, double[] dy, double[]? dFinal) => Gradients(c, c.ToFloat64(), dy, dFinal);

    public static SsdTensors64 Gradients(SsdCase c, SsdTensors64 v, double[] dy, double[]? dFinal)
    {
        int L = c.SeqLen, H = c.Heads, P = c.HeadDim, G = c.Groups, N = c.DState;
        double[] Like(double[]? a) => a is null ? null! : new double[a.Length];
        var gr = new SsdTensors64(Like(v.X), Like(v.Dt), Like(v.A), Like(v.B), Like(v.C), v.D is null ? null : Like(v.D),
            v.Z is null ? null : Like(v.Z), v.DtBias is null ? null : Like(v.DtBias), v.InitialStates is null ? null : Like(v.InitialStates));

        var aScale = new double[H];
        var biasScale = new double[H];
        var dScale = v.D is null ? null : new double[v.D.Length];
        var states = new double[(L + 1) * P * N];   // states[t + 1] = S_t, states[0] = S_{-1}
        var yPre = new double[L * P];
        var dts = new double[L];
        var dS = new double[P * N];
        for (var b = 0; b < c.Batch; b++)
        {
            for (var h = 0; h < H; h++)
            {
                var g = h / (H / G);
                var sbase = (b * H + h) * P * N;
                for (var i = 0; i < P * N; i++)
                {
                    states[i] = v.InitialStates is null ? 0 : v.InitialStates[sbase + i];
                }

                // Forward, keeping every state and y before the gate.
                for (var t = 0; t < L; t++)
                {
                    var dt = dts[t] = SsdReference.ProcessDt(c, v, b, t, h).Dt;
                    var a = Math.Exp(dt * v.A[h]);
                    var bc = ((b * L + t) * G + g) * N;
                    var xo = ((b * L + t) * H + h) * P;
                    for (var pi = 0; pi < P; pi++)
                    {
                        double acc = 0;
                        for (var ni = 0; ni < N; ni++)
                        {
                            var s = a * states[(t * P + pi) * N + ni] + dt * v.X[xo + pi] * v.B[bc + ni];
                            states[((t + 1) * P + pi) * N + ni] = s;
                            acc += s * v.C[bc + ni];
                        }

                        yPre[t * P + pi] = acc + (v.D is null ? 0 : v.D[c.DPerHeadDim ? h * P + pi : h] * v.X[xo + pi]);
                    }
                }

                for (var i = 0; i < P * N; i++)
                {
                    dS[i] = dFinal is null ? 0 : dFinal[sbase + i];
                }

                for (var t = L - 1; t >= 0; t--)
                {
                    var dt = dts[t];
                    var a = Math.Exp(dt * v.A[h]);
                    var bc = ((b * L + t) * G + g) * N;
                    var xo = ((b * L + t) * H + h) * P;
                    // daTerms, ddtTerms: the sizes of the terms da and ddt sum, which the fp32 sums' error follows.
                    double ddt = 0, da = 0, daTerms = 0, ddtTerms = 0;
                    for (var pi = 0; pi < P; pi++)
                    {
                        var o = xo + pi;
                        var gv = dy[o];
                        if (v.Z is not null)
                        {
                            var zv = v.Z[o];
                            var sg = 1 / (1 + Math.Exp(-zv));
                            gr.Z![o] += dy[o] * yPre[t * P + pi] * sg * (1 + zv * (1 - sg));
                            gv *= zv * sg;
                        }

                        if (v.D is not null)
                        {
                            var di = c.DPerHeadDim ? h * P + pi : h;
                            gr.X[o] += v.D[di] * gv;
                            gr.D![di] += gv * v.X[o];
                            dScale![di] += Math.Abs(gv * v.X[o]);
                        }

                        double dxs = 0;
                        for (var ni = 0; ni < N; ni++)
                        {
                            var k = pi * N + ni;
                            dS[k] += gv * v.C[bc + ni];
                            gr.C[bc + ni] += gv * states[(t + 1) * P * N + k];
                            da += dS[k] * states[t * P * N + k];
                            daTerms += Math.Abs(dS[k] * states[t * P * N + k]);
                            ddt += dS[k] * v.X[o] * v.B[bc + ni];
                            ddtTerms += Math.Abs(dS[k] * v.X[o] * v.B[bc + ni]);
                            dxs += dS[k] * v.B[bc + ni];
                            gr.B[bc + ni] += dt * dS[k] * v.X[o];
                        }

                        gr.X[o] += dt * dxs;
                    }

                    for (var i = 0; i < P * N; i++)
                    {
                        dS[i] *= a;
                    }

                    ddt += da * a * v.A[h];
                    ddtTerms += daTerms * a * Math.Abs(v.A[h]);
                    gr.A[h] += da * a * dt;
                    aScale[h] += daTerms * a * dt;
                    var (raw, sp, _) = SsdReference.ProcessDt(c, v, b, t, h);
                    if (sp < c.DtMin || sp > c.DtMax)
                    {
                        ddt = 0;
                        ddtTerms = 0;
                    }

                    if (c.DtSoftplus && raw <= 20)
                    {
                        ddt *= 1 / (1 + Math.Exp(-raw));
                        ddtTerms *= 1 / (1 + Math.Exp(-raw));
                    }

                    gr.Dt[(b * L + t) * H + h] = ddt;
                    if (gr.DtBias is not null)
                    {
                        gr.DtBias[h] += ddt;
                        biasScale[h] += ddtTerms;
                    }
                }

                if (gr.InitialStates is not null)
                {
                    Array.Copy(dS, 0, gr.InitialStates, sbase, P * N);
                }
            }
        }

        return gr with { ATermScale = aScale, DtBiasTermScale = biasScale, DTermScale = dScale };
    }
}
