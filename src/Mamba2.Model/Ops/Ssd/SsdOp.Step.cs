using System.Runtime.InteropServices;
using Mamba2.Model.Tensors;
using Mamba2.Vulkan;

namespace Mamba2.Model.Ops.Ssd;

public static partial class SsdOp
{
    [StructLayout(LayoutKind.Sequential)]
    private readonly record struct StepPush(uint Batch, uint Heads, uint Groups, uint HeadDim, uint DState, SsdFlags Flags, float DtMin, float DtMax);

    /// <summary>
    /// One token of the recurrence (mamba_ssm's selective_state_update), constant cost: x (b, h, p), dt (b, h), A (h),
    /// B and C (b, g, n), state (b, h, p, n) updated in place; options' D, dt_bias, softplus and limits as the
    /// chunked op (z is not applied here). Returns y (b, h, p).
    /// </summary>
    public static Tensor Step(Tensor x, Tensor dt, Tensor A, Tensor B, Tensor C, Tensor state, SsdOptions? options = null, CommandStream? stream = null)
    {
        const string op = "Ssd step";
        var o = options ?? new SsdOptions();
        ShapeOps.ExpectRank(x, "x", op, 3);
        int b = x.Shape[0], h = x.Shape[1], p = x.Shape[2];
        ShapeOps.ExpectRank(B, "B", op, 3);
        int g = B.Shape[1], n = B.Shape[2];
        ShapeOps.Expect(dt, "dt", op, b, h);
        ShapeOps.Expect(A, "A", op, h);
        ShapeOps.Expect(B, "B", op, b, g, n);
        ShapeOps.Expect(C, "C", op, b, g, n);
        ShapeOps.Expect(state, "state", op, b, h, p, n);
        if (h % g != 0)
        {
            throw new ArgumentException($"{op}: heads ({h}) must be a multiple of groups ({g}).", nameof(B));
        }

        // A step is causal whatever the options' direction: D per token is not accepted here.
        SsdShape.CheckSkipAndBias(op, o with { Direction = SsdDirection.Causal }, b, 1, h, p);

        var device = x.Device;
        var y = Tensor.Empty(device, "y", b, h, p);
        var flags = SsdFlagsExtensions.ForD(o.D) | SsdFlags.DtBias.If(o.DtBias is not null) | SsdFlags.DtSoftplus.If(o.DtSoftplus);
        var local = Shaders.Local1D(device);
        Shaders.RunIn(device, stream, st => st.Dispatch(device.GetKernel(Shaders.SsdStep, new LocalSize(local)), (Shaders.Groups1D(device, (long)b * h * p, local), 1, 1),
            new StepPush((uint)b, (uint)h, (uint)g, (uint)p, (uint)n, flags, o.DtLimit.Min, o.DtLimit.Max),
            x.Buffer, dt.Buffer, A.Buffer, B.Buffer, C.Buffer, (o.D ?? A).Buffer, (o.DtBias ?? A).Buffer, state.Buffer, y.Buffer));
        return y;
    }
}
