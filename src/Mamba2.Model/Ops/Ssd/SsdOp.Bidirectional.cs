using System.Runtime.InteropServices;
using Mamba2.Model.Tensors;
using Mamba2.Vulkan;

namespace Mamba2.Model.Ops.Ssd;

/// <summary>
/// The bidirectional forms as the composition of two causal runs: the forward scan on the inputs and the reverse
/// scan as a causal scan of flipped copies, shifted one step each in the Hydra form, combined with D x and the gate.
/// This is the reference-shaped path the fused single pass is measured against.
/// </summary>
public static partial class SsdOp
{
    [StructLayout(LayoutKind.Sequential)]
    private readonly record struct RemapPush(uint Batch, uint SeqLen, uint Row, uint Flip, int Offset, uint Accumulate);

    [StructLayout(LayoutKind.Sequential)]
    private readonly record struct CombinePush(uint Batch, uint SeqLen, uint Heads, uint HeadDim, uint Shift, uint Flags);

    /// <summary>The options of each causal run inside a bidirectional one: no D, gate or reverse tensors.</summary>
    private static SsdOptions CausalPart(SsdOptions o) =>
        o with { Direction = SsdDirection.Causal, D = null, Z = null, InitialStates = null, DtRev = null, BRev = null, CRev = null };

    private static int Shift(SsdOptions o) => o.Direction == SsdDirection.BidirectionalShift ? 1 : 0;

    private static SsdResult ForwardBidirectional(Tensor x, Tensor dt, Tensor A, Tensor B, Tensor C, SsdOptions o, SsdShape s,
        CommandStream? stream)
    {
        var device = x.Device;
        var created = new List<IDisposable>();
        T Keep<T>(T d)
            where T : IDisposable
        {
            created.Add(d);
            return d;
        }

        try
        {
            SsdResult? result = null;
            Shaders.RunIn(device, stream, st =>
            {
                var xFlip = Keep(Flipped(st, x, "x_flip"));
                var dtFlip = Keep(Flipped(st, o.DtRev ?? dt, "dt_flip"));
                var bFlip = Keep(Flipped(st, o.BRev ?? B, "B_flip"));
                var cFlip = Keep(Flipped(st, o.CRev ?? C, "C_flip"));
                var causal = CausalPart(o);
                var fwd = Keep(Forward(x, dt, A, B, C, causal, st));
                var rev = Keep(Forward(xFlip, dtFlip, A, bFlip, cFlip, causal, st));
                var y = Keep(Tensor.Empty(device, "y", s.Batch, s.SeqLen, s.Heads, s.HeadDim));
                var yPre = o.Z is null ? null : Keep(Tensor.Empty(device, "y_before_gate", s.Batch, s.SeqLen, s.Heads, s.HeadDim));
                var dFlags = o.D switch { null => 0u, { Rank: 1 } => 1u, { Rank: 2 } => 2u, _ => 4u };
                var local = Shaders.Local1D(device);
                st.Dispatch(device.GetKernel(Shaders.BidirCombine, [local]),
                    (Shaders.Groups1D(device, y.Length, local), 1, 1),
                    new CombinePush((uint)s.Batch, (uint)s.SeqLen, (uint)s.Heads, (uint)s.HeadDim, (uint)Shift(o), dFlags | (o.Z is null ? 0u : 8u)),
                    fwd.Y.Buffer, rev.Y.Buffer, x.Buffer, (o.D ?? A).Buffer, (o.Z ?? x).Buffer, y.Buffer, (yPre ?? y).Buffer);
                result = new SsdResult(y, yPre, new BidirectionalRuns(o.Direction, fwd, rev, xFlip, dtFlip, bFlip, cFlip));
            });
            return result!;
        }
        catch
        {
            foreach (var d in created)
            {
                d.Dispose();
            }

            throw;
        }
    }

    private static SsdGradients BackwardBidirectional(Tensor dy, SsdResult saved, Tensor x, Tensor dt, Tensor A, Tensor B, Tensor C,
        SsdOptions o, SsdShape s, Tensor? dFinalStates, CommandStream? stream)
    {
        const string op = "Ssd backward";
        var runs = saved.Bidirectional;
        if (runs is null || runs.Direction != o.Direction)
        {
            throw new ArgumentException(
                $"{op}: saved comes from a {runs?.Direction ?? SsdDirection.Causal} forward but the options are {o.Direction}; pass the result of the same call.", nameof(saved));
        }

        if (o.Z is not null && saved.YBeforeGate is null)
        {
            throw new ArgumentException($"{op}: z is given but saved has no y before the gate (it came from a forward without z).", nameof(saved));
        }

        var device = x.Device;
        var created = new List<Tensor>();
        Tensor New(string name, params int[] shape)
        {
            var t = Tensor.Empty(device, name, shape);
            created.Add(t);
            return t;
        }

        try
        {
            int b = s.Batch, l = s.SeqLen, h = s.Heads, p = s.HeadDim, g = s.Groups, n = s.DState;
            var grads = new SsdGradients(
                New("dx", b, l, h, p), New("ddt", b, l, h), New("dA", h), New("dB", b, l, g, n), New("dC", b, l, g, n),
                o.D is null ? null : New("dD", [.. o.D.Shape]),
                o.Z is null ? null : New("dz", b, l, h, p),
                o.DtBias is null ? null : New("ddt_bias", h),
                null,
                o.DtRev is null ? null : New("ddt_rev", b, l, h),
                o.BRev is null ? null : New("dB_rev", b, l, g, n),
                o.CRev is null ? null : New("dC_rev", b, l, g, n));
            Shaders.RunIn(device, stream, st =>
            {
                // The gate, then the upstream gradient of each causal run: g moved to where that run wrote.
                var gate = o.Z is null ? dy : st.Own(Tensor.Empty(device, "g", b, l, h, p));
                if (o.Z is not null && saved.YBeforeGate is not null && grads.Dz is not null)
                {
                    var local = Shaders.Local1D(device);
                    st.Dispatch(device.GetKernel(Shaders.ChunkScanBwdDz, [local]), (Shaders.Groups1D(device, gate.Length, local), 1, 1),
                        (uint)gate.Length, dy.Buffer, o.Z.Buffer, saved.YBeforeGate.Buffer, gate.Buffer, grads.Dz.Buffer);
                }

                var shift = Shift(o);
                var gFwd = shift == 0 ? gate : st.Own(Remapped(st, gate, "g_fwd", flip: false, offset: shift));
                var gRev = st.Own(Remapped(st, gate, "g_rev", flip: true, offset: shift));
                var causal = CausalPart(o);
                var fwd = st.Own(Backward(gFwd, runs.Forward, x, dt, A, B, C, causal, dFinalStates, st));
                var rev = st.Own(Backward(gRev, runs.Reverse, runs.XFlip, runs.DtFlip, A, runs.BFlip, runs.CFlip, causal, null, st));

                // Inputs both scans read get both gradients; the reverse scan's come back flipped.
                st.Copy(fwd.Dx.Buffer, 0, grads.Dx.Buffer, 0, grads.Dx.Buffer.SizeBytes);
                Remap(st, rev.Dx, grads.Dx, flip: true, offset: 0, accumulate: true);
                Sum(st, fwd.Ddt, rev.Ddt, grads.Ddt, grads.DDtRev);
                Sum(st, fwd.DB, rev.DB, grads.DB, grads.DBRev);
                Sum(st, fwd.DC, rev.DC, grads.DC, grads.DCRev);
                Elementwise.Add(fwd.DA, rev.DA, grads.DA, st);
                if (grads.DDtBias is not null)
                {
                    Elementwise.Add(fwd.DDtBias!, rev.DDtBias!, grads.DDtBias, st);
                }

                if (o.D is not null && grads.DD is not null)
                {
                    AddSkipGradients(st, o.D, gate, x, grads.Dx, grads.DD, s);
                }
            });
            return grads;
        }
        catch
        {
            foreach (var t in created)
            {
                t.Dispose();
            }

            throw;
        }
    }

    /// <summary>
    /// d/dD and the skip connection's share of dx: dx += D g, dD = sum of g x over the batch and positions (and the
    /// head dimension for D (h)); for D (b, L, h), over the head dimension only. Fixed-order sums.
    /// </summary>
    private static void AddSkipGradients(CommandStream st, Tensor D, Tensor gate, Tensor x, Tensor dx, Tensor dD, SsdShape s)
    {
        var device = x.Device;
        uint b = (uint)s.Batch, l = (uint)s.SeqLen, h = (uint)s.Heads, p = (uint)s.HeadDim;
        // dx += D g: a combine of nothing but the skip term (zero scan outputs are not needed: shift past the ends).
        var skip = st.Own(Tensor.Empty(device, "d_skip", s.Batch, s.SeqLen, s.Heads, s.HeadDim));
        var dFlags = D switch { { Rank: 1 } => 1u, { Rank: 2 } => 2u, _ => 4u };
        var local = Shaders.Local1D(device);
        st.Dispatch(device.GetKernel(Shaders.BidirCombine, [local]), (Shaders.Groups1D(device, skip.Length, local), 1, 1),
            new CombinePush(b, l, h, p, l, dFlags), gate.Buffer, gate.Buffer, gate.Buffer, D.Buffer, gate.Buffer, skip.Buffer, skip.Buffer);
        Elementwise.Add(dx, skip, dx, st);

        if (D.Rank == 3)
        {
            Reduce(st, device, gate.Buffer, dD.Buffer, 1, 1, b * l * h, p, 1, x.Buffer);
            return;
        }

        var blocks = (l + ReduceBlockRows - 1) / ReduceBlockRows;
        var part = st.Own(Tensor.Empty(device, "dD_part", s.Batch, (int)blocks, s.Heads * s.HeadDim));
        Reduce(st, device, gate.Buffer, part.Buffer, b, l, h * p, 1, ReduceBlockRows, x.Buffer);
        var rows = b * blocks;
        Reduce(st, device, part.Buffer, dD.Buffer, 1, rows, D.Rank == 2 ? h * p : h, D.Rank == 2 ? 1u : p, rows);
    }

    /// <summary>Gradients of a tensor both scans read (summed), or of the reverse scan's own tensor (kept apart).</summary>
    private static void Sum(CommandStream st, Tensor fromForward, Tensor fromReverseFlipped, Tensor shared, Tensor? reverseOwn)
    {
        st.Copy(fromForward.Buffer, 0, shared.Buffer, 0, shared.Buffer.SizeBytes);
        if (reverseOwn is null)
        {
            Remap(st, fromReverseFlipped, shared, flip: true, offset: 0, accumulate: true);
        }
        else
        {
            Remap(st, fromReverseFlipped, reverseOwn, flip: true, offset: 0, accumulate: false);
        }
    }

    private static Tensor Flipped(CommandStream st, Tensor t, string name) => Remapped(st, t, name, flip: true, offset: 0);

    private static Tensor Remapped(CommandStream st, Tensor t, string name, bool flip, int offset)
    {
        var output = Tensor.Empty(t.Device, name, [.. t.Shape]);
        try
        {
            Remap(st, t, output, flip, offset, accumulate: false);
            return output;
        }
        catch
        {
            output.Dispose();
            throw;
        }
    }

    /// <summary>output[b, t] (+)= input[b, src(t)] along the sequence axis (seq_remap.comp).</summary>
    private static void Remap(CommandStream st, Tensor input, Tensor output, bool flip, int offset, bool accumulate)
    {
        var device = input.Device;
        Shaders.EnsureBindable("Ssd", input, output);
        var row = input.Length / ((long)input.Shape[0] * input.Shape[1]);
        var local = Shaders.Local1D(device);
        st.Dispatch(device.GetKernel(Shaders.SeqRemap, [local]), (Shaders.Groups1D(device, input.Length, local), 1, 1),
            new RemapPush((uint)input.Shape[0], (uint)input.Shape[1], (uint)row, flip ? 1u : 0u, offset, accumulate ? 1u : 0u),
            input.Buffer, output.Buffer);
    }
}
