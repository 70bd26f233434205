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

/// <summary>
/// Gradients of <see cref="Conv1d.Backward(Tensor, ColumnView, Tensor, Tensor?, Conv1dPadding, bool, CommandStream?)"/>: dx (b, L, c),
/// or null where it was written into the caller's columns; dweight shaped as the weight; dbias (c) when a bias was given.
/// </summary>
public sealed record Conv1dGradients(Tensor? Dx, Tensor DWeight, Tensor? DBias) : IDisposable
{
    /// <summary>Every tensor held, as Dispose frees them.</summary>
    internal IEnumerable<Tensor> All() => new[] { Dx, DWeight, DBias }.OfType<Tensor>();

    public void Dispose()
    {
        foreach (var t in All())
        {
            t.Dispose();
        }
    }
}

/// <summary>
/// Depthwise 1-D convolution over the sequence with an optional bias and SiLU, channels last: x (b, L, c), weight
/// (c, K) or (c, 1, K) as HF/mamba_ssm store conv1d.weight, bias (c). The Mamba2 layer's conv over [x, B, C], which
/// it reads in place from the fused projection's output (a <see cref="ColumnView"/>) and writes straight into x, B
/// and C; its backward reads their gradients and writes dxBC into the projection's gradient, so no copies split or
/// join them.
/// </summary>
public static class Conv1d
{
    [StructLayout(LayoutKind.Sequential)]
    private readonly record struct Push(uint Batch, uint SeqLen, uint Channels, uint Left, uint HasBias, uint BlockRows, uint XStride, uint XCol, uint Split1, uint Split2);

    [StructLayout(LayoutKind.Sequential)]
    private readonly record struct BwdPush(uint Batch, uint SeqLen, uint Channels, uint Left, uint HasBias, uint BlockRows,
        uint XStride, uint XCol, uint DxStride, uint DxCol, uint Split1, uint Split2);

    /// <summary>Most tensors a channel-cut operand (the forward's outputs, the backward's dy) may come in.</summary>
    public const int MaxParts = 3;

    /// <summary>Positions per partial sum of the weight gradient (then summed over blocks in a fixed order).</summary>
    private const int BlockRows = 64;

    /// <summary>Positions one forward invocation walks (K - 1 of halo read again per block).</summary>
    private const uint ForwardBlockRows = 16;

    /// <summary>Widest kernel supported (a specialization constant sizes per-invocation arrays).</summary>
    public const int MaxWidth = 32;

    /// <summary>y = silu?(bias + depthwise conv(x)), shape (b, L, c); x may be columns of a wider (b, L, *) tensor.</summary>
    public static Tensor Forward(ColumnView x, Tensor weight, Tensor? bias, Conv1dPadding padding = Conv1dPadding.Causal, bool silu = false,
        CommandStream? stream = null)
    {
        var (b, l, c, _) = Validate("Conv1d", x, weight, bias);
        var y = Tensor.Empty(x.Tensor.Device, "y", b, l, c);
        return TensorScope.Recorded(y, () => Forward(x, weight, bias, [y], padding, silu, stream));
    }

    /// <summary>
    /// The same with y cut by channel, in order, into <paramref name="outputs"/> (1 to <see cref="MaxParts"/> tensors
    /// (b, L, width) whose widths add up to x's): the layer's x, B and C straight from the conv.
    /// </summary>
    public static void Forward(ColumnView x, Tensor weight, Tensor? bias, IReadOnlyList<Tensor> outputs, Conv1dPadding padding = Conv1dPadding.Causal,
        bool silu = false, CommandStream? stream = null)
    {
        const string op = "Conv1d";
        var (b, l, c, k) = Validate(op, x, weight, bias);
        var (split1, split2) = Parts(op, "outputs", outputs, x.Tensor, b, l, c);
        var bf16 = outputs[0].DType == TensorDType.BF16;   // the outputs written as bf16 (the SSD's x, B and C as bf16 tensors)
        var bf16X = x.Tensor.DType == TensorDType.BF16;    // x read as bf16 (in_proj's output in bf16)
        var device = x.Tensor.Device;
        var local = Shaders.Local1D(device);
        var kernel = device.GetKernel(Shaders.Conv1dOf(bf16, bf16X), new Conv1dSpec(local, (uint)k, silu));
        long[] outputElements = [.. outputs.Select(o => (long)l * o.Shape[2])];
        Shaders.RunIn(device, stream, st =>
        {
            foreach (var pc in Shaders.Pieces(device, op, b, [(long)l * x.Stride, .. outputElements],
                         perBatchHalves: [.. bf16X ? [(long)l * x.Stride] : Array.Empty<long>(), .. bf16 ? outputElements : []]))
            {
                st.Dispatch(kernel, (Shaders.Groups1D(device, pc.Count * ((l + ForwardBlockRows - 1) / ForwardBlockRows) * c, local), 1, 1),
                    new Push((uint)pc.Count, (uint)l, (uint)c, Left(padding, k), bias is null ? 0u : 1u, ForwardBlockRows, (uint)x.Stride, (uint)x.Start, split1, split2),
                    pc.Of(x.Tensor, bf16X), weight.Buffer, (bias ?? weight).Buffer, pc.Of(outputs[0], bf16), pc.Of(outputs[Math.Min(1, outputs.Count - 1)], bf16),
                    pc.Of(outputs[^1], bf16));
            }
        });
    }

    /// <summary>Gradients from dy (b, L, c), with the forward's inputs and settings (the activation is recomputed).</summary>
    public static Conv1dGradients Backward(Tensor dy, ColumnView x, Tensor weight, Tensor? bias, Conv1dPadding padding = Conv1dPadding.Causal,
        bool silu = false, CommandStream? stream = null) =>
        Backward([dy], x, weight, bias, padding, silu, null, stream);

    /// <summary>
    /// The same with dy cut by channel into parts (1 to <see cref="MaxParts"/> tensors (b, L, width), in order: the SSD's
    /// dx, dB and dC) and, when <paramref name="dxInto"/> is given, dx written into those columns of a wider (b, L, *)
    /// tensor (the fused projection's gradient) instead of a tensor of its own (the result's Dx is then null).
    /// </summary>
    public static Conv1dGradients Backward(IReadOnlyList<Tensor> dy, ColumnView x, Tensor weight, Tensor? bias, Conv1dPadding padding, bool silu,
        ColumnView? dxInto, CommandStream? stream = null) =>
        Backward(dy, x, weight, bias, padding, silu, dxInto, null, stream);

    /// <summary>
    /// The same with dx stored as bf16 into <paramref name="dxPacked"/>'s columns when given (the products' operands);
    /// with <paramref name="dxAbsMaxInto"/> the largest |dx| written into <paramref name="dxInto"/> is folded into that
    /// word too (<see cref="TensorCoreGemm.PackFolded"/>).
    /// </summary>
    internal static Conv1dGradients Backward(IReadOnlyList<Tensor> dy, ColumnView x, Tensor weight, Tensor? bias, Conv1dPadding padding, bool silu,
        ColumnView? dxInto, PackedColumns? dxPacked, CommandStream? stream, GpuBuffer<uint>? dxAbsMaxInto = null)
    {
        const string op = "Conv1d backward";
        var (b, l, c, k) = Validate(op, x, weight, bias);
        var (split1, split2) = Parts(op, "dy", dy, x.Tensor, b, l, c);
        if (dxInto is { } into)
        {
            ExpectColumns(op, "dx", into, b, l, c);
            ShapeOps.ExpectSameDevice(op, x.Tensor, into.Tensor);
            if (into.Tensor.DType != TensorDType.F32)
            {
                throw new ArgumentException($"{op}: dx goes into columns of a float32 tensor, not {into.Tensor} (bf16 gradients go to packed operands).", nameof(dxInto));
            }
        }

        if (dxAbsMaxInto is not null && dxPacked is not null)
        {
            throw new ArgumentException($"{op}: the largest |dx| is folded only where dx is written as float32.", nameof(dxAbsMaxInto));
        }

        if (dxPacked is { } packed)
        {
            if (dxInto is not null || packed.Width != c || packed.Rows != (long)b * l)
            {
                throw new ArgumentException($"{op}: dx as bf16 must be {(long)b * l} rows of {c} columns and its only place, got {packed}.", nameof(dxPacked));
            }

            ShapeOps.ExpectSameDevice(op, x.Tensor, packed.Packed);
            packed.ExpectWritable(op);
        }

        var device = x.Tensor.Device;
        var scope = new TensorScope(device);
        try
        {
            var grads = new Conv1dGradients(dxInto is null && dxPacked is null ? scope.New("dx", b, l, c) : null, scope.New("dweight", [.. weight.Shape]),
                bias is null ? null : scope.New("dbias", c));
            var dx = dxInto ?? grads.Dx ?? x;   // with dxPacked, x stands in for the unused fp32 binding
            var blocks = (l + BlockRows - 1) / BlockRows;
            var mark = scope.Count;
            var dwPart = scope.New("dweight_part", b, blocks, c, k);
            var dbPart = scope.New("dbias_part", b, blocks, c);
            var local = Shaders.Local1D(device);
            // A packed dx is bound whole: its piece's first batch is in the start column (16-bit offsets need not align).
            var push = (Piece pc) => new BwdPush((uint)pc.Count, (uint)l, (uint)c, Left(padding, k), bias is null ? 0u : 1u, BlockRows,
                (uint)x.Stride, (uint)x.Start, (uint)(dxPacked?.Stride ?? dx.Stride), (uint)(dxPacked is { } pk ? pk.Start + (pc.First * l * pk.Stride) : dx.Start), split1, split2);
            var bf16 = dy[0].DType == TensorDType.BF16;   // dy's parts read as bf16 (the SSD's dx, dB and dC on bf16 tensors)
            var bf16X = x.Tensor.DType == TensorDType.BF16;   // x read as bf16 (in_proj's output in bf16)
            var kernel = Shaders.Conv1dBwdOf(bf16, dxPacked is not null, bf16X);
            long[] dyElements = [.. dy.Select(d => (long)l * d.Shape[2])];
            Shaders.RunIn(device, stream, st =>
            {
                foreach (var t in scope.Since(mark))
                {
                    st.Own(t);
                }

                foreach (var pc in Shaders.Pieces(device, op, b, [(long)l * x.Stride, (long)l * dx.Stride, (long)blocks * c * k, .. dyElements],
                             perBatchHalves: [.. bf16X ? [(long)l * x.Stride] : Array.Empty<long>(), .. bf16 ? dyElements : []]))
                {
                    BufferBinding dxBinding = dxPacked is { } words ? words.Words : pc.Of(dx.Tensor);
                    st.Dispatch(device.GetKernel(kernel, new Conv1dBwdSpec(local, (uint)k, silu, dxAbsMaxInto is not null)),
                        (Shaders.Groups1D(device, pc.Count * blocks * c, local), 1, 1),
                        push(pc), pc.Of(dy[0], bf16), pc.Of(x.Tensor, bf16X), weight.Buffer, (bias ?? weight).Buffer, dxBinding, pc.Of(dwPart), pc.Of(dbPart),
                        pc.Of(dy[Math.Min(1, dy.Count - 1)], bf16), pc.Of(dy[^1], bf16), dxAbsMaxInto ?? dxBinding);
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

    private static (int B, int L, int C, int K) Validate(string op, ColumnView xv, Tensor weight, Tensor? bias)
    {
        var x = xv.Tensor;
        ShapeOps.ExpectRank(x, "x", op, 3);
        int b = x.Shape[0], l = x.Shape[1], c = xv.Width;
        ShapeOps.ExpectRank(weight, "weight", op, 2, 3);
        var k = weight.Shape[^1];
        if (weight.Shape[0] != c || (weight.Rank == 3 && weight.Shape[1] != 1))
        {
            throw new ArgumentException($"{op}: weight must have shape ({c}, K) or ({c}, 1, K) for x {xv}, got {ShapeOps.Format(weight.Shape)}.", nameof(weight));
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

    /// <summary>The channel cut of a parted operand: 1 to <see cref="MaxParts"/> tensors (b, L, width) that cover c in order.</summary>
    private static (uint Split1, uint Split2) Parts(string op, string name, IReadOnlyList<Tensor> parts, Tensor x, int b, int l, int c)
    {
        if (parts.Count is < 1 or > MaxParts)
        {
            throw new ArgumentException($"{op}: {name} must be 1 to {MaxParts} tensors, got {parts.Count}.", name);
        }

        var widths = new int[parts.Count];
        for (var i = 0; i < parts.Count; i++)
        {
            var part = parts[i];
            ShapeOps.ExpectRank(part, $"{name}[{i}]", op, 3);
            if (part.Shape[0] != b || part.Shape[1] != l)
            {
                throw new ArgumentException($"{op}: {name}[{i}] must be (b={b}, L={l}, width), got {ShapeOps.Format(part.Shape)}.", name);
            }

            ShapeOps.ExpectSameDevice(op, x, part);
            if (part.DType != parts[0].DType)
            {
                throw new ArgumentException($"{op}: {name}[{i}] is {part.DType.Name()} but {name}[0] is {parts[0].DType.Name()}; the parts share one dtype.", name);
            }

            widths[i] = part.Shape[2];
        }

        if (widths.Sum() != c)
        {
            throw new ArgumentException($"{op}: {name} widths {string.Join(" + ", widths)} must add up to the {c} channels.", name);
        }

        var split1 = widths.Length > 1 ? widths[0] : c;
        var split2 = widths.Length > 2 ? widths[0] + widths[1] : c;
        return ((uint)split1, (uint)split2);
    }

    /// <summary>A view the kernel writes b x L rows of c channels into: columns of a (b, L, *) tensor.</summary>
    private static void ExpectColumns(string op, string name, ColumnView v, int b, int l, int c)
    {
        if (v.Tensor.Rank != 3 || v.Tensor.Shape[0] != b || v.Tensor.Shape[1] != l || v.Width != c)
        {
            throw new ArgumentException($"{op}: {name} must be {c} columns of a (b={b}, L={l}, *) tensor, got {v}.", name);
        }
    }
}
