using System.Runtime.InteropServices;
using Mamba2.Model.Tensors;
using Mamba2.Vulkan;

namespace Mamba2.Model.Ops;

/// <summary>
/// What <see cref="CrossEntropy.Forward"/> returns: the mean loss (1), and per row the log-sum-exp and the summed
/// (loss, count) pair the backward reads. <see cref="TargetsInRange"/> reports targets outside [0, V).
/// </summary>
public sealed class CrossEntropyResult : IDisposable
{
    private readonly GpuBuffer<uint> _status;

    internal CrossEntropyResult(Tensor loss, Tensor lse, Tensor sums, GpuBuffer<uint> status)
    {
        Loss = loss;
        Lse = lse;
        Sums = sums;
        _status = status;
    }

    /// <summary>The mean over counted rows, shape (1); NaN when every target is ignore_index (as PyTorch).</summary>
    public Tensor Loss { get; }

    internal Tensor Lse { get; }

    internal Tensor Sums { get; }

    /// <summary>False when a target other than ignore_index fell outside [0, V) (such rows count as ignored). Read after the forward ran.</summary>
    public bool TargetsInRange() => _status.Download()[0] == 0;

    public void Dispose()
    {
        Loss.Dispose();
        Lse.Dispose();
        Sums.Dispose();
        _status.Dispose();
    }
}

/// <summary>
/// Cross-entropy of logits (..., V) against int targets (...), PyTorch's <c>F.cross_entropy(logits, targets,
/// ignore_index=-100, reduction='mean')</c>: the mean over rows whose target is not ignore_index.
/// </summary>
public static class CrossEntropy
{
    [StructLayout(LayoutKind.Sequential)]
    private readonly record struct Push(uint Rows, uint Vocab, int IgnoreIndex);

    public const int DefaultIgnoreIndex = -100;

    /// <summary>
    /// The loss. Without a stream the call waits for the GPU and throws when a target (other than ignore_index) is
    /// outside [0, V); with one, check <see cref="CrossEntropyResult.TargetsInRange"/> after submitting.
    /// </summary>
    public static CrossEntropyResult Forward(Tensor logits, IndexTensor targets, int ignoreIndex = DefaultIgnoreIndex, CommandStream? stream = null)
    {
        const string op = "CrossEntropy";
        var (rows, vocab) = Validate(op, logits, targets);
        var device = logits.Device;
        var scope = new TensorScope(device);
        GpuBuffer<uint>? status = null;
        try
        {
            var loss = scope.New("loss", 1);
            var lse = scope.New("lse", (int)rows);
            var sums = scope.New("loss_count", 2);
            var mark = scope.Count;
            var pairs = scope.New("row_loss", (int)rows, 2);
            status = device.CreateBuffer<uint>(1, "cross_entropy_status");
            var result = new CrossEntropyResult(loss, lse, sums, status);
            var push = new Push((uint)rows, (uint)vocab, ignoreIndex);
            var wg = Shaders.RowLocal(device, vocab);
            Shaders.RunIn(device, stream, st =>
            {
                foreach (var t in scope.Since(mark))
                {
                    st.Own(t);
                }

                st.Fill(status, 0u);
                st.Dispatch(device.GetKernel(Shaders.CrossEntropy, new CrossEntropySpec(wg, CrossEntropyMode.RowPairs)), (Shaders.Groups(device, rows), 1, 1), push,
                    logits.Buffer, targets.Buffer, pairs.Buffer, lse.Buffer, loss.Buffer, logits.Buffer, status);
                Reductions.Sum(st, pairs.Buffer, sums.Buffer, (uint)rows, 2);
                st.Dispatch(device.GetKernel(Shaders.CrossEntropy, new CrossEntropySpec(wg, CrossEntropyMode.Loss)), (1, 1, 1), push,
                    logits.Buffer, targets.Buffer, sums.Buffer, lse.Buffer, loss.Buffer, logits.Buffer, status);
            });
            if (stream is null && !result.TargetsInRange())
            {
                result.Dispose();
                throw new ArgumentOutOfRangeException(nameof(targets), $"{op}: a target is outside [0, {vocab}) and is not ignore_index ({ignoreIndex}).");
            }

            return result;
        }
        catch (Exception e) when (e is not ArgumentOutOfRangeException)
        {
            scope.DisposeAll();
            status?.Dispose();
            throw;
        }
    }

    /// <summary>d logits from the loss's upstream gradient <paramref name="dloss"/> (shape (1), usually 1).</summary>
    public static Tensor Backward(Tensor dloss, CrossEntropyResult saved, Tensor logits, IndexTensor targets, int ignoreIndex = DefaultIgnoreIndex,
        CommandStream? stream = null)
    {
        const string op = "CrossEntropy backward";
        var (rows, vocab) = Validate(op, logits, targets);
        ShapeOps.Expect(dloss, "dloss", op, 1);
        ShapeOps.Expect(saved.Lse, "saved.Lse", $"{op}: saved must come from Forward on these logits", (int)rows);
        var device = logits.Device;
        var dlogits = Tensor.Empty(device, "dlogits", [.. logits.Shape]);
        var local = Shaders.PowerOfTwoLocal(device);
        return TensorScope.Recorded(dlogits, () => Shaders.RunIn(device, stream, st => st.Dispatch(device.GetKernel(Shaders.CrossEntropy, new CrossEntropySpec(local, CrossEntropyMode.Gradient)),
            (Shaders.Groups1D(device, logits.Length, local), 1, 1), new Push((uint)rows, (uint)vocab, ignoreIndex),
            logits.Buffer, targets.Buffer, saved.Sums.Buffer, saved.Lse.Buffer, dloss.Buffer, dlogits.Buffer, saved.Lse.Buffer)));
    }

    /// <summary>Throws unless <paramref name="targets"/> has the leading dimensions of <paramref name="x"/> (..., n) and lives on its device.</summary>
    internal static void ExpectTargets(string op, Tensor x, string name, IndexTensor targets)
    {
        var lead = x.Shape.Take(x.Rank - 1).ToArray();
        if (!targets.Shape.SequenceEqual(lead))
        {
            throw new ArgumentException($"{op}: targets must have shape {ShapeOps.Format(lead)} for {name} {ShapeOps.Format(x.Shape)}, got {ShapeOps.Format(targets.Shape)}.", nameof(targets));
        }

        if (!ReferenceEquals(x.Device, targets.Device))
        {
            throw new ArgumentException($"{op}: targets live on another device than {name}.", nameof(targets));
        }
    }

    private static (long Rows, int Vocab) Validate(string op, Tensor logits, IndexTensor targets)
    {
        if (logits.Rank < 2)
        {
            throw new ArgumentException($"{op}: logits must be (..., V), got {ShapeOps.Format(logits.Shape)}.", nameof(logits));
        }

        ExpectTargets(op, logits, nameof(logits), targets);
        Shaders.EnsureBindable(op, logits);
        return (targets.Length, logits.Shape[^1]);
    }
}
