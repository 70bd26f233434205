namespace Mamba2.Model.Tests.Reference;

/// <summary>Float64 reference for Gemm: the textbook triple loop over the stored (possibly transposed) layouts.</summary>
public static class GemmReference
{
    public static double[] Run(float[] a, float[] b, float[]? c, int batch, int m, int n, int k,
        bool transposeA, bool transposeB, double alpha, double beta)
    {
        var y = new double[batch * m * n];
        for (var z = 0; z < batch; z++)
        {
            for (var i = 0; i < m; i++)
            {
                for (var j = 0; j < n; j++)
                {
                    double sum = 0;
                    for (var l = 0; l < k; l++)
                    {
                        double av = transposeA ? a[z * m * k + l * m + i] : a[z * m * k + i * k + l];
                        double bv = transposeB ? b[z * k * n + j * k + l] : b[z * k * n + l * n + j];
                        sum += av * bv;
                    }

                    var idx = z * m * n + i * n + j;
                    y[idx] = alpha * sum + (beta != 0 ? beta * c![idx] : 0);
                }
            }
        }

        return y;
    }
}
