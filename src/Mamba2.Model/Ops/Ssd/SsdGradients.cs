using Mamba2.Model.Tensors;

namespace Mamba2.Model.Ops.Ssd;

/// <summary>
/// What <see cref="SsdOp.Backward"/> produces: the gradient of every input of the forward, each shaped as its input.
/// The optional ones are present exactly when the forward was given that input. Disposing frees all of them.
/// </summary>
public sealed class SsdGradients : IDisposable
{
    internal SsdGradients(Tensor dx, Tensor ddt, Tensor dA, Tensor dB, Tensor dC, Tensor? dD, Tensor? dz, Tensor? dDtBias, Tensor? dInitialStates,
        Tensor? dDtRev = null, Tensor? dBRev = null, Tensor? dCRev = null)
    {
        DDtRev = dDtRev;
        DBRev = dBRev;
        DCRev = dCRev;
        Dx = dx;
        Ddt = ddt;
        DA = dA;
        DB = dB;
        DC = dC;
        DD = dD;
        Dz = dz;
        DDtBias = dDtBias;
        DInitialStates = dInitialStates;
    }

    public Tensor Dx { get; }

    /// <summary>Gradient of the raw dt input (before bias, softplus and clamp).</summary>
    public Tensor Ddt { get; }

    public Tensor DA { get; }

    public Tensor DB { get; }

    public Tensor DC { get; }

    public Tensor? DD { get; }

    public Tensor? Dz { get; }

    public Tensor? DDtBias { get; }

    public Tensor? DInitialStates { get; }

    /// <summary>Gradient of the reverse scan's own dt (raw), when it was given.</summary>
    public Tensor? DDtRev { get; }

    public Tensor? DBRev { get; }

    public Tensor? DCRev { get; }

    /// <summary>Every gradient with the name of its input (x, dt, A, B, C, D, z, dt_bias, initial_states, dt_rev, B_rev, C_rev).</summary>
    public IEnumerable<(string Input, Tensor Gradient)> Named()
    {
        yield return ("x", Dx);
        yield return ("dt", Ddt);
        yield return ("A", DA);
        yield return ("B", DB);
        yield return ("C", DC);
        foreach (var (name, t) in new[] { ("D", DD), ("z", Dz), ("dt_bias", DDtBias), ("initial_states", DInitialStates), ("dt_rev", DDtRev), ("B_rev", DBRev), ("C_rev", DCRev) })
        {
            if (t is not null)
            {
                yield return (name, t);
            }
        }
    }

    public void Dispose()
    {
        foreach (var (_, t) in Named())
        {
            t.Dispose();
        }
    }
}
