using Mamba2.Model.Modules;
using Mamba2.Model.Ops.Ssd;

namespace Mamba2.Model.Tests.Reference;

/// <summary>
/// Float64 Mamba2 layer composed from the float64 references of its parts (matmuls written out, conv1d, the SSD
/// recurrence or its bidirectional composition, RMSNorm), forward and backward, parameters by HF name.
/// </summary>
public sealed class Mamba2LayerReference(Mamba2Config c, IReadOnlyDictionary<string, double[]> p, int batch, int seqLen)
{
    private int Rows => batch * seqLen;

    /// <summary>
    /// After <see cref="Backward"/>: for the gradients that sum terms of both signs over every position (A_log,
    /// dt_bias), the size of those terms, which an fp32 result's error is judged against.
    /// </summary>
    public Dictionary<string, double[]> TermScales { get; } = [];

    /// <summary>
    /// The rounding the GPU's products give the activations they multiply (in bf16: each operand rounded to bf16
    /// once, as Gemm.Pack does; the identity otherwise), applied where this layer's products read u, the gated norm's
    /// output, dout and the gradient of in_proj's output. The parameters come already rounded.
    /// </summary>
    public Func<double, double> Operand { get; init; } = v => v;

    /// <summary>
    /// The rounding of the activations the GPU stores at 16 bits (in bf16: the SSD's x, B, C and y, its dy and its
    /// gradients dx, dB and dC, each rounded to bf16 where it is written; the identity otherwise).
    /// </summary>
    public Func<double, double> Activation { get; init; } = v => v;

    /// <summary>
    /// The rounding of in_proj's output (z, xBC and dt) as the GPU stores it (Mamba2Layer.InProjOutputType: in bf16,
    /// rounded once to bf16 from the fp32 sum; the identity otherwise).
    /// </summary>
    public Func<double, double> InProjOutput { get; init; } = v => v;

    private double[] Stored(double[] a) => a.Select(Activation).ToArray();

    private double[] Operands(double[] a) => a.Select(Operand).ToArray();

    private int Gn => c.NGroups * c.DState;

    private int Left => c.Causal ? c.DConv - 1 : (c.DConv - 1) / 2;

    /// <summary>y = a (rows, k) times w^T for w (n, k).</summary>
    private static double[] MatMulT(double[] a, double[] w, int rows, int k, int n)
    {
        var y = new double[rows * n];
        for (var r = 0; r < rows; r++)
        {
            for (var j = 0; j < n; j++)
            {
                double s = 0;
                for (var i = 0; i < k; i++)
                {
                    s += a[r * k + i] * w[j * k + i];
                }

                y[r * n + j] = s;
            }
        }

        return y;
    }

    private static double[] Cols(double[] a, int rows, int cols, int from, int width)
    {
        var y = new double[rows * width];
        for (var r = 0; r < rows; r++)
        {
            Array.Copy(a, r * cols + from, y, r * width, width);
        }

        return y;
    }

    private static double[] Concat(int rows, params (double[] Data, int Width)[] parts)
    {
        var total = parts.Sum(q => q.Width);
        var y = new double[rows * total];
        for (var r = 0; r < rows; r++)
        {
            var at = 0;
            foreach (var (data, width) in parts)
            {
                Array.Copy(data, r * width, y, r * total + at, width);
                at += width;
            }
        }

        return y;
    }

    private SsdCase Case => new(batch, seqLen, c.NHeads, c.HeadDim, c.NGroups, c.DState, c.ChunkSize, [], [], [], [], [],
        null, c.DHasHdim, null, null, null, true, c.DtLimit.Min, c.DtLimit.Max)
    { Direction = c.Causal ? SsdDirection.Causal : SsdDirection.BidirectionalSum };

    private sealed record Saved(double[] Zx, double[] Z, double[] XBC, double[] Dt, double[] X, double[] B, double[] C, double[] A,
        SsdTensors64 Ssd, double[] Y, double[] N);

    private Saved Run(double[] u)
    {
        var zx = MatMulT(Operands(u), p["in_proj.weight"], Rows, c.DModel, c.DInProj).Select(InProjOutput).ToArray();
        var z = Cols(zx, Rows, c.DInProj, 0, c.DInner);
        var xbc = Cols(zx, Rows, c.DInProj, c.DInner, c.ConvDim);
        var dt = Cols(zx, Rows, c.DInProj, c.DInner + c.ConvDim, c.NHeads);
        var act = Conv1dReference.Forward(xbc, p["conv1d.weight"], p.GetValueOrDefault("conv1d.bias"), batch, seqLen, c.ConvDim, c.DConv, Left, silu: true);
        var x = Stored(Cols(act, Rows, c.ConvDim, 0, c.DInner));
        var bm = Stored(Cols(act, Rows, c.ConvDim, c.DInner, Gn));
        var cm = Stored(Cols(act, Rows, c.ConvDim, c.DInner + Gn, Gn));
        var a = p["A_log"].Select(v => -Math.Exp(v)).ToArray();
        var v = new SsdTensors64(x, dt, a, bm, cm, p["D"], null, p["dt_bias"], null);
        var y = Stored(c.Causal ? SsdReference.Forward(Case, v).Y : SsdBidirectionalReference.Forward(Case, v).Y);
        var n = RmsNormReference.Forward(y, p["norm.weight"], z, c.NormEps, c.DInner, c.NormGroupSize, c.NormBeforeGate);
        return new Saved(zx, z, xbc, dt, x, bm, cm, a, v, y, n);
    }

    public double[] Forward(double[] u) => MatMulT(Operands(Run(u).N), p["out_proj.weight"], Rows, c.DInner, c.DModel);

    public (double[] Du, Dictionary<string, double[]> Grads) Backward(double[] u, double[] dout)
    {
        var s = Run(u);
        var g = new Dictionary<string, double[]>();
        var dwOut = new double[c.DModel * c.DInner];
        var dn = new double[Rows * c.DInner];
        var (dOut, nOut) = (Operands(dout), Operands(s.N));
        for (var r = 0; r < Rows; r++)
        {
            for (var j = 0; j < c.DModel; j++)
            {
                for (var i = 0; i < c.DInner; i++)
                {
                    dwOut[j * c.DInner + i] += dOut[r * c.DModel + j] * nOut[r * c.DInner + i];
                    dn[r * c.DInner + i] += dOut[r * c.DModel + j] * p["out_proj.weight"][j * c.DInner + i];
                }
            }
        }

        g["out_proj.weight"] = dwOut;
        var (dy, dNormW, dz) = RmsNormReference.Backward(dn, s.Y, p["norm.weight"], s.Z, c.NormEps, c.DInner, c.NormGroupSize, c.NormBeforeGate);
        g["norm.weight"] = dNormW;
        dy = Stored(dy);
        var sg = c.Causal ? SsdReferenceBackward.Gradients(Case, s.Ssd, dy, null) : SsdBidirectionalReference.Gradients(Case, s.Ssd, dy, null);
        g["dt_bias"] = sg.DtBias!;
        g["D"] = sg.D!;
        g["A_log"] = sg.A.Select((d, i) => d * s.A[i]).ToArray();
        TermScales["A_log"] = sg.ATermScale!.Select((d, i) => d * Math.Abs(s.A[i])).ToArray();
        TermScales["dt_bias"] = sg.DtBiasTermScale!;
        TermScales["D"] = sg.DTermScale!;
        var dAct = Concat(Rows, (Stored(sg.X), c.DInner), (Stored(sg.B), Gn), (Stored(sg.C), Gn));
        var (dxbc, dConvW, dConvB) = Conv1dReference.Backward(dAct, s.XBC, p["conv1d.weight"], p.GetValueOrDefault("conv1d.bias"), batch, seqLen, c.ConvDim, c.DConv, Left, silu: true);
        g["conv1d.weight"] = dConvW;
        var (wScale, bScale) = Conv1dReference.ParameterTermScales(dAct, s.XBC, p["conv1d.weight"], p.GetValueOrDefault("conv1d.bias"), batch, seqLen, c.ConvDim, c.DConv, Left, silu: true);
        TermScales["conv1d.weight"] = wScale;
        if (dConvB is not null)
        {
            g["conv1d.bias"] = dConvB;
            TermScales["conv1d.bias"] = bScale!;
        }

        var dzx = Operands(Concat(Rows, (dz!, c.DInner), (dxbc, c.ConvDim), (sg.Dt, c.NHeads)));
        var uIn = Operands(u);
        var dwIn = new double[c.DInProj * c.DModel];
        var du = new double[Rows * c.DModel];
        for (var r = 0; r < Rows; r++)
        {
            for (var j = 0; j < c.DInProj; j++)
            {
                var d = dzx[r * c.DInProj + j];
                for (var i = 0; i < c.DModel; i++)
                {
                    dwIn[j * c.DModel + i] += d * uIn[r * c.DModel + i];
                    du[r * c.DModel + i] += d * p["in_proj.weight"][j * c.DModel + i];
                }
            }
        }

        g["in_proj.weight"] = dwIn;
        return (du, g);
    }
}
