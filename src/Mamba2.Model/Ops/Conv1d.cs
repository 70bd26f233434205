using System.Runtime.InteropServices;
using Mamba2.Model.Tensors;
using Mamba2.Vulkan;

namespace Mamba2.Model.Ops;

/// <summary>Where a depthwise convolution looks: back only (causal), or centred ("same", the bidirectional layer).</summary>
public enum Conv1dPadding
{
    /// <summary>Left padding K - 1: y[t] sees x[t - K + 1 .. t] (mamba_ssm's causal_conv1d).</summary>
    Causal,

    /// <summary>PyTorch's padding='same': left floor((K - 1) / 2), right the rest (Hydra, K odd: centred).</summary>
    Same,
}

/// <summary>Gradients of <see cref="Conv1d.Backward"/>: dx (b, L, c), dweight shaped as the weight, dbias (c) when a bias was given.</summary>
public sealed record Conv1dGradients(Tensor Dx, Tensor DWeight, Tensor? DBias) : IDisposable
{
    public void Dispose()
    {
        Dx.Dispose();
        DWeight.Dispose();
        DBias?.Dispose();
    }
}

/// <summary>
/// Depthwise 1-D convolution over the sequence with an optional bias and SiLU, channels last: x (b, L, c), weight
/// (c, K) or (c, 1, K) as HF/mamba_ssm store conv1d.weight, bias (c). The Mamba2 layer's conv over [x, B, C].
/// </summary>
public static class Conv1d
{
    [StructLayout(LayoutKind.Sequential)]
    private readonly record struct Push(uint Batch, uint SeqLen, uint Channels, uint Left, uint HasBias);

    [StructLayout(LayoutKind.Sequential)]
    private readonly record struct BwdPush(uint Batch, uint SeqLen, uint Channels, uint Left, uint HasBias, uint BlockRows);

    /// <summary>Positions per partial sum of the weight gradient (then summed over blocks in a fixed order).</summary>
    private const int BlockRows = 64;

    /// <summary>Widest kernel supported (a specialization constant sizes per-invocation arrays).</summary>
    public const int MaxWidth = 32;

    /// <summary>y = silu?(bias + depthwise conv(x)), shape (b, L, c).</summary>
    public static Tensor Forward(Tensor x, Tensor weight, Tensor? bias, Conv1dPadding padding = Conv1dPadding.Causal, bool silu = false,
        CommandStream? stream = null)
    {
        var (b, l, c, k) = Validate("Conv1d", x, weight, bias);
        var device = x.Device;
        var y = Tensor.Empty(device, "y", b, l, c);
        return TensorScope.Recorded(y, () =>
        {
            var local = Shaders.Local1D(device);
            var kernel = device.GetKernel(Shaders.Conv1d, new Conv1dSpec(local, (uint)k, silu));
            Shaders.RunIn(device, stream, st =>
            {
                foreach (var pc in Shaders.Pieces(device, "Conv1d", b, [(long)l * c]))
                {
                    st.Dispatch(kernel, (Shaders.Groups1D(device, pc.Count * l * c, local), 1, 1),
                        new Push((uint)pc.Count, (uint)l, (uint)c, Left(padding, k), bias is null ? 0u : 1u),
                        pc.Of(x), weight.Buffer, (bias ?? weight).Buffer, pc.Of(y));
                }
            });
        });
    }

    /// <summary>Gradients from dy (b, L, c), with the forward's inputs and settings (the activation is recomputed).</summary>
    public static Conv1dGradients Backward(Tensor dy, Tensor x, Tensor weight, Tensor? bias, Conv1dPadding padding = Conv1dPadding.Causal,
        bool silu = false, CommandStream? stream = null)
    {
        const string op = "Conv1d backward";
        var (b, l, c, k) = Validate(op, x, weight, bias);
        ShapeOps.Expect(dy, "dy", $"{op} (x is (b={b}, L={l}, c={c}))", b, l, c);
        ShapeOps.ExpectSameDevice(op, dy, x);
        var device = x.Device;
        var scope = new TensorScope(device);
        try
        {
            var grads = new Conv1dGradients(scope.New("dx", b, l, c), scope.New("dweight", [.. weight.Shape]), bias is null ? null : scope.New("dbias", c));
            var blocks = (l + BlockRows - 1) / BlockRows;
            var mark = scope.Count;
            var dwPart = scope.New("dweight_part", b, blocks, c, k);
            var dbPart = scope.New("dbias_part", b, blocks, c);
            var local = Shaders.Local1D(device);
            var push = (uint count) => new BwdPush(count, (uint)l, (uint)c, Left(padding, k), bias is null ? 0u : 1u, BlockRows);
            Shaders.RunIn(device, stream, st =>
            {
                foreach (var t in scope.Since(mark))
                {
                    st.Own(t);
                }

                var perBatch = (long)l * c;
                foreach (var pc in Shaders.Pieces(device, op, b, [perBatch, (long)blocks * c * k]))
                {
                    st.Dispatch(device.GetKernel(Shaders.Conv1dBwd, new Conv1dBwdSpec(local, (uint)k, silu)), (Shaders.Groups1D(device, pc.Count * blocks * c, local), 1, 1),
                        push((uint)pc.Count), pc.Of(dy), pc.Of(x), weight.Buffer, (bias ?? weight).Buffer, pc.Of(grads.Dx), pc.Of(dwPart), pc.Of(dbPart));
                }

                var rows = (uint)(b * blocks);
                Reductions.Sum(st, dwPart.Buffer, grads.DWeight.Buffer, rows, (uint)(c * k));
                if (grads.DBias is not null)
                {
                    Reductions.Sum(st, dbPart.Buffer, grads.DBias.Buffer, rows, (uint)c);
                }
            });
            return grads;
        }
        catch
        {
            scope.DisposeAll();
            throw;
        }
    }

    [StructLayout(LayoutKind.Sequential)]
    private readonly record struct StepPush(uint Batch, uint Channels, uint HasBias);

    /// <summary>
    /// One generation step of the causal conv with SiLU: x (b, c) the new input, state (b, c, K - 1) the last K - 1
    /// inputs (oldest first), updated in place; returns y (b, c).
    /// </summary>
    public static Tensor Step(Tensor x, Tensor weight, Tensor? bias, Tensor state, CommandStream? stream = null)
    {
        const string op = "Conv1d step";
        ShapeOps.ExpectRank(x, "x", op, 2);
        int b = x.Shape[0], c = x.Shape[1];
        var (_, _, _, k) = Validate(op, x.View(b, 1, c), weight, bias);
        ShapeOps.Expect(state, "state", op, b, c, k - 1 == 0 ? 1 : k - 1);
        var device = x.Device;
        var y = Tensor.Empty(device, "y", b, c);
        var local = Shaders.Local1D(device);
        Shaders.RunIn(device, stream, st => st.Dispatch(device.GetKernel(Shaders.Conv1dStep, new Conv1dStepSpec(local, (uint)k)),
            (Shaders.Groups1D(device, (long)b * c, local), 1, 1), new StepPush((uint)b, (uint)c, bias is null ? 0u : 1u),
            x.Buffer, weight.Buffer, (bias ?? weight).Buffer, state.Buffer, y.Buffer));
        return y;
    }

    private static uint Left(Conv1dPadding padding, int k) => (uint)(padding == Conv1dPadding.Causal ? k - 1 : (k - 1) / 2);

    private static (int B, int L, int C, int K) Validate(string op, Tensor x, Tensor weight, Tensor? bias)
    {
        ShapeOps.ExpectRank(x, "x", op, 3);
        int b = x.Shape[0], l = x.Shape[1], c = x.Shape[2];
        ShapeOps.ExpectRank(weight, "weight", op, 2, 3);
        var k = weight.Shape[^1];
        if (weight.Shape[0] != c || (weight.Rank == 3 && weight.Shape[1] != 1))
        {
            throw new ArgumentException($"{op}: weight must have shape ({c}, K) or ({c}, 1, K) for x {ShapeOps.Format(x.Shape)}, got {ShapeOps.Format(weight.Shape)}.", nameof(weight));
        }

        if (k is < 1 or > MaxWidth)
        {
            throw new ArgumentOutOfRangeException(nameof(weight), k, $"{op}: kernel width must be in 1..{MaxWidth}.");
        }

        if (bias is not null)
        {
            ShapeOps.Expect(bias, "bias", op, c);
        }

        ShapeOps.ExpectSameDevice(op, [.. new[] { x, weight, bias }.OfType<Tensor>()]);
        Shaders.EnsureBindable(op, weight, bias);
        return (b, l, c, k);
    }
}
