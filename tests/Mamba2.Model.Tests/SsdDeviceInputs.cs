using Mamba2.Model.Ops;
using Mamba2.Model.Ops.Ssd;
using Mamba2.Model.Tensors;
using Mamba2.Model.Tests.Reference;
using Mamba2.Vulkan;

namespace Mamba2.Model.Tests;

/// <summary>
/// An <see cref="SsdCase"/> uploaded to the device, with the matching options (on the given path); x, B, C and z as
/// <paramref name="tensors"/> (bf16: rounded to nearest even as they are uploaded).
/// </summary>
public sealed class SsdDeviceInputs : IDisposable
{
    private readonly List<Tensor> _all = [];

    public SsdDeviceInputs(GpuDevice device, SsdCase c, SsdPath path = SsdPath.Auto, Precision precision = Precision.Fp32,
        TensorDType tensors = TensorDType.F32)
    {
        Tensor Up(string name, float[] data, params int[] shape) => UpAs(TensorDType.F32, name, data, shape);
        Tensor UpAs(TensorDType dtype, string name, float[] data, params int[] shape)
        {
            var t = Tensor.FromArray(device, name, data, dtype, shape);
            _all.Add(t);
            return t;
        }

        X = UpAs(tensors, "x", c.X, c.Batch, c.SeqLen, c.Heads, c.HeadDim);
        Dt = Up("dt", c.Dt, c.Batch, c.SeqLen, c.Heads);
        A = Up("A", c.A, c.Heads);
        B = UpAs(tensors, "B", c.B, c.Batch, c.SeqLen, c.Groups, c.DState);
        C = UpAs(tensors, "C", c.C, c.Batch, c.SeqLen, c.Groups, c.DState);
        Options = new SsdOptions
        {
            ChunkSize = c.Chunk,
            Path = path,
            Precision = precision,
            D = c.D is null ? null : Up("D", c.D, c.DPerToken ? [c.Batch, c.SeqLen, c.Heads] : c.DPerHeadDim ? [c.Heads, c.HeadDim] : [c.Heads]),
            Z = c.Z is null ? null : UpAs(tensors, "z", c.Z, c.Batch, c.SeqLen, c.Heads, c.HeadDim),
            DtBias = c.DtBias is null ? null : Up("dt_bias", c.DtBias, c.Heads),
            InitialStates = c.InitialStates is null ? null : Up("initial_states", c.InitialStates, c.Batch, c.Heads, c.HeadDim, c.DState),
            DtSoftplus = c.DtSoftplus,
            DtLimit = (c.DtMin, c.DtMax),
            Direction = c.Direction,
            DtRev = c.DtRev is null ? null : Up("dt_rev", c.DtRev, c.Batch, c.SeqLen, c.Heads),
            BRev = c.BRev is null ? null : Up("B_rev", c.BRev, c.Batch, c.SeqLen, c.Groups, c.DState),
            CRev = c.CRev is null ? null : Up("C_rev", c.CRev, c.Batch, c.SeqLen, c.Groups, c.DState),
        };
    }

    public Tensor X { get; }

    public Tensor Dt { get; }

    public Tensor A { get; }

    public Tensor B { get; }

    public Tensor C { get; }

    public SsdOptions Options { get; }

    public SsdResult Forward(CommandStream? stream = null) => SsdOp.Forward(X, Dt, A, B, C, Options, stream);

    public void Dispose()
    {
        foreach (var t in _all)
        {
            t.Dispose();
        }
    }
}
