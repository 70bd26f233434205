using System.Runtime.InteropServices;
using Mamba2.Model.Tensors;
using Mamba2.Vulkan;

namespace Mamba2.Model.Ops;

/// <summary>
/// What <see cref="LinearCrossEntropy.Run"/> returns: the mean loss, and when asked the gradients of that loss
/// (dloss = 1) with respect to the hidden states and the head's weight, and each row's argmax.
/// </summary>
public sealed class LinearCrossEntropyResult : IDisposable
{
    private readonly GpuBuffer<int>? _predictions;
    private readonly bool _ownsGradients;

    internal LinearCrossEntropyResult(Tensor loss, Tensor? dHidden, Tensor? dWeight, bool ownsGradients, GpuBuffer<int>? predictions)
    {
        Loss = loss;
        DHidden = dHidden;
        DWeight = dWeight;
        _ownsGradients = ownsGradients;
        _predictions = predictions;
    }

    /// <summary>The mean over rows whose target is not ignore_index, shape (1); NaN when every target is ignored (as PyTorch).</summary>
    public Tensor Loss { get; }

    /// <summary>d loss / d hidden, hidden's shape; null unless gradients were asked for.</summary>
    public Tensor? DHidden { get; }

    /// <summary>d loss / d weight (vocab, d); null unless gradients were asked for.</summary>
    public Tensor? DWeight { get; }

    /// <summary>Each row's first largest logit index (NaN never counts), read back to the host; throws unless asked for.</summary>
    public int[] Predictions() =>
        (_predictions ?? throw new InvalidOperationException("LinearCrossEntropy: predictions were not asked for (predictions: true).")).Download();

    public void Dispose()
    {
        Loss.Dispose();
        if (_ownsGradients)
        {
            DHidden?.Dispose();
            DWeight?.Dispose();
        }

        _predictions?.Dispose();
    }
}

/// <summary>
/// A linear head and cross-entropy in one op, PyTorch's <c>F.cross_entropy(hidden @ weight.T, targets,
/// ignore_index=-100)</c> (mean), computed a block of rows at a time: each block's logits are formed, scored, turned
/// into their gradient in place and multiplied into the hidden and weight gradients before the next block, so the
/// (rows, vocab) logits and their gradient never exist whole (a language model's largest tensors).
/// </summary>
public static class LinearCrossEntropy
{
    /// <summary>The most a block's logits take by default, on a device of 128 GiB or more.</summary>
    public const long MaxDefaultBlockBytes = 2L << 30;

    /// <summary>The least they take by default, on a small device.</summary>
    public const long MinDefaultBlockBytes = 64L << 20;

    /// <summary>
    /// The default bound on one block's logits on <paramref name="device"/>: 1/64 of its device-local memory, within
    /// [64 MiB, 2 GiB]. Larger blocks make the head's products larger (fewer passes over the weight gradient) at the
    /// price of memory: a block also holds its gradient's 16-bit copy.
    /// </summary>
    public static long DefaultBlockBytes(GpuDevice device)
    {
        ArgumentNullException.ThrowIfNull(device);
        return Math.Clamp((long)Math.Min(device.Info.DeviceLocalBytes / 64, long.MaxValue), MinDefaultBlockBytes, MaxDefaultBlockBytes);
    }

    /// <summary>Blocks start at multiples of this many rows, which keeps every bound slice on any device's offset alignment.</summary>
    private const int RowQuantum = 64;

    [StructLayout(LayoutKind.Sequential)]
    private readonly record struct Push(uint Rows, uint Vocab, int IgnoreIndex);

    /// <summary>
    /// The mean cross-entropy of logits = <paramref name="hidden"/> (..., d) times <paramref name="weight"/> (vocab, d)
    /// transposed against <paramref name="targets"/> (...). With <paramref name="gradients"/>, also the gradients of
    /// that mean (written into <paramref name="dHidden"/> and <paramref name="dWeight"/> when given, else allocated);
    /// with <paramref name="predictions"/>, each row's argmax. The products run in <paramref name="precision"/>;
    /// a block's logits take at most <paramref name="blockBytes"/> (a multiple of 64 rows, at least 64; by default
    /// <see cref="DefaultBlockBytes"/> of the device).
    /// Targets other than ignore_index outside [0, vocab) are refused before anything runs.
    /// </summary>
    public static LinearCrossEntropyResult Run(Tensor hidden, Tensor weight, IndexTensor targets, bool gradients = true, bool predictions = false,
        Precision precision = Precision.Fp32, int ignoreIndex = CrossEntropy.DefaultIgnoreIndex, long? blockBytes = null,
        Tensor? dHidden = null, Tensor? dWeight = null, CommandStream? stream = null)
    {
        const string op = "LinearCrossEntropy";
        var (rows, d, vocab, count) = Validate(op, hidden, weight, targets, ignoreIndex);
        if ((dHidden is not null || dWeight is not null) && !gradients)
        {
            throw new ArgumentException($"{op}: dHidden and dWeight are outputs of the gradients (gradients: true).", nameof(gradients));
        }

        if (dHidden is not null)
        {
            ShapeOps.Expect(dHidden, nameof(dHidden), op, [.. hidden.Shape]);
        }

        if (dWeight is not null)
        {
            ShapeOps.Expect(dWeight, nameof(dWeight), op, vocab, d);
        }

        var device = hidden.Device;
        var bound = blockBytes ?? DefaultBlockBytes(device);
        ArgumentOutOfRangeException.ThrowIfLessThan(bound, 1, nameof(blockBytes));
        var blockRows = BlockRows(rows, vocab, Math.Min(bound, (long)Math.Min(device.Capabilities.MaxStorageBufferRange, (ulong)long.MaxValue)));
        var scope = new TensorScope(device);
        GpuBuffer<int>? argmax = null;
        var ownsGradients = gradients && dHidden is null && dWeight is null;
        if (gradients && (dHidden is null) != (dWeight is null))
        {
            throw new ArgumentException($"{op}: give both dHidden and dWeight, or neither.", nameof(dHidden));
        }

        try
        {
            // The loss and predictions, read by the host after every step, are written straight into host memory: no
            // copy and no submission to read them.
            var loss = scope.NewIn(MemoryKind.Readback, "loss", 1);
            dHidden ??= gradients ? scope.New("d_hidden", [.. hidden.Shape]) : null;
            dWeight ??= gradients ? scope.New("d_weight", vocab, d) : null;
            argmax = predictions ? device.CreateBuffer<int>(rows, "predictions", MemoryKind.Readback) : null;
            var result = new LinearCrossEntropyResult(loss, dHidden, dWeight, ownsGradients, argmax);
            Shaders.RunIn(device, stream, st => Record(st, hidden, weight, targets, result, rows, d, vocab, count, blockRows, precision, ignoreIndex, argmax));
            return result;
        }
        catch
        {
            scope.DisposeAll();
            argmax?.Dispose();
            throw;
        }
    }

    /// <summary>Rows a block holds: the most whose logits fit <paramref name="blockBytes"/>, spread evenly, in multiples of 64.</summary>
    internal static int BlockRows(long rows, int vocab, long blockBytes)
    {
        var fit = Math.Max(RowQuantum, blockBytes / ((long)vocab * sizeof(float)) / RowQuantum * RowQuantum);
        var blocks = (rows + fit - 1) / fit;
        var even = (rows + blocks - 1) / blocks;
        return (int)Math.Min(rows, (even + RowQuantum - 1) / RowQuantum * RowQuantum);
    }

    private static void Record(CommandStream st, Tensor hidden, Tensor weight, IndexTensor targets, LinearCrossEntropyResult result,
        long rows, int d, int vocab, long count, int blockRows, Precision precision, int ignoreIndex, GpuBuffer<int>? argmax)
    {
        var device = st.Device;
        var pairs = st.Own(device.CreateBuffer<float>(rows * 2, "row_loss"));
        var sums = st.Own(device.CreateBuffer<float>(2, "loss_count"));
        var status = st.Own(device.CreateBuffer<uint>(1, "cross_entropy_status"));   // targets were checked on the host
        st.Fill(status, 0u);

        // Mean over counted rows; PyTorch's gradient of an all-ignored batch is zero (its loss is NaN). The row pass
        // writes softmax - onehot, within [-1, 1] (16-bit operands need no scale of their own); the products apply 1 / count.
        var alpha = count == 0 ? 0f : (float)(1.0 / count);
        var rowLocal = Shaders.RowLocal(device, vocab);
        var gradient = GradientForm(device, result.DHidden is not null, precision, vocab);
        var rowsKernel = device.GetKernel(Shaders.CrossEntropyRows, RowPass(device, vocab, gradient, argmax is not null));
        // With tensor-core products the weight is packed once for every block's two products, and each block's
        // hidden rows once for their two (into packed scratch reused block after block); the row pass writes the
        // logits' gradient as packed operands itself where it can (even vocab), else it is packed after it.
        GemmInput weightIn = precision == Precision.Fp32 ? weight : st.Own(Gemm.Pack(weight, precision, st));
        var packedSets = new Dictionary<Tensor, PackedOperand>();
        GemmInput Packed(Tensor x)
        {
            if (precision == Precision.Fp32)
            {
                return x;
            }

            if (packedSets.TryGetValue(x, out var p))
            {
                Gemm.PackInto(x, p, st);
                return p;
            }

            return packedSets[x] = st.Own(Gemm.Pack(x, precision, st));
        }

        var blockSets = new Dictionary<int, (Tensor H, Tensor Logits, Tensor? DH, PackedOperand? DLogits)>();
        (Tensor H, Tensor Logits, Tensor? DH, PackedOperand? DLogits) Scratch(int n)
        {
            if (!blockSets.TryGetValue(n, out var set))
            {
                PackedOperand? packed = null;
                if (gradient is not (CrossEntropyRowsGradient.None or CrossEntropyRowsGradient.Fp32InPlace))
                {
                    var operands = precision.Operands(device);
                    packed = st.Own(TensorCoreGemm.EmptyPacked(device, "head_block.d_logits", [n, vocab], operands));
                    // The scale word the row pass's f16 operands were scaled for: a largest |x| of 1 (bf16: unscaled).
                    st.Fill(packed.ScaleBits, operands.Scaled() ? BitConverter.SingleToUInt32Bits(1f) : 0u);
                }

                set = (st.Own(Tensor.Empty(device, "head_block.hidden", n, d)), st.Own(Tensor.Empty(device, "head_block.logits", n, vocab)),
                    result.DHidden is null ? null : st.Own(Tensor.Empty(device, "head_block.d_hidden", n, d)), packed);
                blockSets[n] = set;
            }

            return set;
        }

        for (long r0 = 0; r0 < rows; r0 += blockRows)
        {
            var n = (int)Math.Min(blockRows, rows - r0);
            var (h, logits, dh, dLogits) = Scratch(n);
            var rowBytes = (ulong)d * sizeof(float);
            st.Copy(hidden.Buffer, (ulong)r0 * rowBytes, h.Buffer, 0, (ulong)n * rowBytes);
            var hIn = dh is null ? h : Packed(h);   // without gradients h is multiplied once
            Gemm.Run(hIn, weightIn, logits, transposeB: true, stream: st, precision: precision);
            var targetSlice = new BufferBinding(targets.Buffer, (ulong)r0 * sizeof(int), (ulong)n * sizeof(int));
            // Unused bindings take a buffer the kernel never touches in that form (the status word).
            var argmaxSlice = argmax is null ? status : new BufferBinding(argmax, (ulong)r0 * sizeof(int), (ulong)n * sizeof(int));
            BufferBinding words = dLogits is null ? status : dLogits.Words;
            st.Dispatch(rowsKernel, (Shaders.Groups(device, n), 1, 1), new Push((uint)n, (uint)vocab, ignoreIndex),
                logits.Buffer, targetSlice, new BufferBinding(pairs, (ulong)r0 * 2 * sizeof(float), (ulong)n * 2 * sizeof(float)), argmaxSlice, words, status);
            if (dh is null)
            {
                continue;
            }

            var gradIn = dLogits is not null ? dLogits : Packed(logits);
            Gemm.Run(gradIn, weightIn, dh, alpha: alpha, stream: st, precision: precision);
            st.Copy(dh.Buffer, 0, result.DHidden!.Buffer, (ulong)r0 * rowBytes, (ulong)n * rowBytes);
            Gemm.Run(gradIn, hIn, result.DWeight!, transposeA: true, alpha: alpha, beta: r0 == 0 ? 0f : 1f, stream: st, precision: precision);
        }

        // The rows' pairs are summed in one fixed order, as CrossEntropy sums them.
        Reductions.Sum(st, pairs, sums, (uint)rows, 2);
        st.Dispatch(device.GetKernel(Shaders.CrossEntropy, new CrossEntropySpec(rowLocal, CrossEntropyMode.Loss)), (1, 1, 1),
            new Push((uint)rows, (uint)vocab, ignoreIndex), pairs, targets.Buffer, sums, result.Loss.Buffer, result.Loss.Buffer, pairs, status);
    }

    /// <summary>
    /// Registers a workgroup may fill: the 64K 32-bit registers of an NVIDIA SM (an AMD CU's SIMDs hold more), so that a
    /// workgroup holding a row still runs.
    /// </summary>
    private const int RegisterBudget = 65_536;

    /// <summary>Registers an invocation needs besides the logits it holds (indices, sums, the argmax).</summary>
    private const int RegistersBesideHeld = 24;

    /// <summary>The most logits an invocation holds: beyond, the row is streamed twice.</summary>
    internal const int MaxHeld = 128;

    /// <summary>
    /// Whether the row pass holds rows by default: on NVIDIA GPUs, where held was timed faster (docs/PERF.md), and
    /// AMD's, whose SIMDs have the registers (up to 256 a lane) for 512 invocations of 124; not on other GPUs, whose
    /// register files may not (a spill would cost more than the second read), nor on CPU drivers.
    /// </summary>
    public static bool HoldsRowsByDefault(GpuDevice device) =>
        !device.Info.IsCpu && device.Info.VendorName is "NVIDIA" or "AMD";

    /// <summary>
    /// The row pass's form: one workgroup per row, its logits moved four at a time where the vocabulary is a multiple
    /// of 4 (every binding it moves so starts at offset 0: the block's logits, the packed words), and held in
    /// registers (read once) where <see cref="OpTuning.HoldLogitRows"/> or the device's default asks and a workgroup the
    /// device runs can hold the row within the register budget; else streamed (read twice).
    /// </summary>
    internal static CrossEntropyRowsSpec RowPass(GpuDevice device, int vocab, CrossEntropyRowsGradient gradient, bool argmax)
    {
        var local = Shaders.RowLocal(device, vocab);
        var quads = vocab % 4 == 0;
        var spec = new CrossEntropyRowsSpec(local, gradient, argmax, quads);
        if (!quads || !(OpTuning.Of(device).HoldLogitRows ?? HoldsRowsByDefault(device)))
        {
            return spec;
        }

        // A larger workgroup holds fewer logits an invocation, so the search goes up from the streamed form's
        // workgroup to the largest the device runs (beyond the 256 of the other row kernels).
        var caps = device.Capabilities;
        var largest = Shaders.PowerOfTwoAtMost(caps.MaxWorkgroupInvocationsX);
        for (var l = Math.Max(local, Math.Max(1u, caps.SubgroupSize)); l <= largest; l *= 2)
        {
            var held = (vocab / 4 + (int)l - 1) / (int)l * 4;
            if (held <= MaxHeld && (long)(held + RegistersBesideHeld) * l <= RegisterBudget)
            {
                return spec with { Local = l, Held = (uint)held };
            }
        }

        return spec;
    }

    /// <summary>
    /// How the row pass leaves the logits' gradient: none without gradients; in place in fp32 for fp32 products and
    /// where a row's 16-bit operands would not start on a word (odd vocab: packed after the pass); else as the
    /// precision's packed operands.
    /// </summary>
    private static CrossEntropyRowsGradient GradientForm(GpuDevice device, bool gradients, Precision precision, int vocab)
    {
        if (!gradients)
        {
            return CrossEntropyRowsGradient.None;
        }

        if (precision == Precision.Fp32 || vocab % 2 != 0)
        {
            return CrossEntropyRowsGradient.Fp32InPlace;
        }

        return precision.Operands(device) switch
        {
            GemmOperands.Bf16 => CrossEntropyRowsGradient.Bf16,
            GemmOperands.Bf16ViaF16 => CrossEntropyRowsGradient.Bf16ViaF16,
            _ => CrossEntropyRowsGradient.F16,
        };
    }

    private static (long Rows, int D, int Vocab, long Count) Validate(string op, Tensor hidden, Tensor weight, IndexTensor targets, int ignoreIndex)
    {
        ShapeOps.ExpectSameDevice(op, hidden, weight);
        if (hidden.Rank < 2)
        {
            throw new ArgumentException($"{op}: hidden must be (..., d), got {ShapeOps.Format(hidden.Shape)}.", nameof(hidden));
        }

        var d = hidden.Shape[^1];
        ShapeOps.ExpectRank(weight, nameof(weight), op, 2);
        if (weight.Shape[1] != d)
        {
            throw new ArgumentException($"{op}: weight must be (vocab, {d}) for hidden {ShapeOps.Format(hidden.Shape)}, got {ShapeOps.Format(weight.Shape)}.", nameof(weight));
        }

        CrossEntropy.ExpectTargets(op, hidden, nameof(hidden), targets);

        var vocab = weight.Shape[0];
        long count = 0;
        var values = targets.Values;
        for (var i = 0; i < values.Length; i++)
        {
            var t = values[i];
            if (t == ignoreIndex)
            {
                continue;
            }

            if (t < 0 || t >= vocab)
            {
                throw new ArgumentOutOfRangeException(nameof(targets), $"{op}: target {t} at index {i} is outside [0, {vocab}) and is not ignore_index ({ignoreIndex}).");
            }

            count++;
        }

        Shaders.EnsureBindable(op, hidden, weight);
        return (targets.Length, d, vocab, count);
    }
}
