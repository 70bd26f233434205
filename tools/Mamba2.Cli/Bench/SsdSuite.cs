using Mamba2.Model.Ops;
using Mamba2.Model.Ops.Ssd;
using Mamba2.Model.Tensors;
using Mamba2.Vulkan;

namespace Mamba2.Cli;

/// <summary>
/// The SSD rows of `bench` at one shape: causal, the bidirectional forms (fused, and the shift form's copy-free
/// composition) and the naive bidirectional composition (two causal runs on flipped copies, flipped back and added,
/// as a user would write it). All with D, dt_bias and softplus, no gate, on fresh random inputs.
/// </summary>
internal sealed class SsdSuite : IDisposable
{
    private readonly GpuDevice _device;
    private readonly BenchShape _s;
    private readonly Precision _precision;
    private readonly TensorDType _dtype;
    private readonly List<Tensor> _inputs = [];
    private readonly Tensor _x, _dt, _a, _b, _c, _d, _dtBias, _dy;

    /// <param name="dtype">x, B, C and dy (and so y and their gradients): fp32, or bf16 in precision bf16.</param>
    public SsdSuite(GpuDevice device, BenchShape s, Random rng, Precision precision, TensorDType dtype = TensorDType.F32)
    {
        (_device, _s, _precision, _dtype) = (device, s, precision, dtype);
        Tensor R(string name, double lo, double hi, int[] shape, TensorDType type = TensorDType.F32)
        {
            var t = Tensor.FromArray(device, name, BenchInputs.Uniform(rng, shape.Aggregate(1L, (a, v) => a * v), lo, hi), type, shape);
            _inputs.Add(t);
            return t;
        }

        _x = R("x", -1, 1, [s.Batch, s.SeqLen, s.Heads, s.HeadDim], dtype);
        _dt = R("dt", -3, 0, [s.Batch, s.SeqLen, s.Heads]);
        _a = R("A", -8, -1, [s.Heads]);
        _b = R("B", -1, 1, [s.Batch, s.SeqLen, s.Groups, s.DState], dtype);
        _c = R("C", -1, 1, [s.Batch, s.SeqLen, s.Groups, s.DState], dtype);
        _d = R("D", 0, 1, [s.Heads]);
        _dtBias = R("dt_bias", -2, 0, [s.Heads]);
        _dy = R("dy", -1, 1, [s.Batch, s.SeqLen, s.Heads, s.HeadDim], dtype);
    }

    private SsdOptions Options(SsdDirection direction = SsdDirection.Causal, SsdBidirectionalPath path = SsdBidirectionalPath.Auto, bool withD = true) => new()
    {
        ChunkSize = _s.Chunk,
        D = withD ? _d : null,
        DtBias = _dtBias,
        DtSoftplus = true,
        Direction = direction,
        BidirectionalPath = path,
        Precision = _precision,
    };

    /// <summary>
    /// A row's implementation, with the precision when not exact fp32 and the tensors' type when bf16 (so a comparison
    /// never pairs modes or types).
    /// </summary>
    private string Impl(string impl) => BenchRow.WithPrecision(impl, _precision) + (_dtype == TensorDType.BF16 ? " on bf16 tensors" : "");

    /// <summary>The rows of <paramref name="ops"/>, each yielded as soon as it is measured (the suite prints it then).</summary>
    public IEnumerable<BenchRow> Rows(IReadOnlyCollection<string> ops, int warmup, int repeats)
    {
        var calls = new List<(string Op, string Impl, bool Bidirectional, Func<CommandStream, bool, IEnumerable<IDisposable>> Call)>();
        if (ops.Contains("ssd"))
        {
            calls.Add(("ssd causal", Impl("ours"), false, (st, bwd) => Ours(st, bwd, Options())));
        }

        if (ops.Contains("bidir"))
        {
            // Both forms fused, in every mode; composed too (the sum form in the tensor-core modes only).
            calls.Add(("ssd bidir sum", Impl("ours fused"), true, (st, bwd) => Ours(st, bwd, Options(SsdDirection.BidirectionalSum, SsdBidirectionalPath.Fused))));
            calls.Add(("ssd bidir shift", Impl("ours fused"), true, (st, bwd) => Ours(st, bwd, Options(SsdDirection.BidirectionalShift, SsdBidirectionalPath.Fused))));
            if (_precision != Precision.Fp32)
            {
                calls.Add(("ssd bidir sum", Impl("ours composed"), true, (st, bwd) => Ours(st, bwd, Options(SsdDirection.BidirectionalSum, SsdBidirectionalPath.Composed))));
            }

            calls.Add(("ssd bidir shift", Impl("ours composed"), true, (st, bwd) => Ours(st, bwd, Options(SsdDirection.BidirectionalShift, SsdBidirectionalPath.Composed))));
        }

        if (ops.Contains("naive") && _dtype == TensorDType.F32)   // its flips and adds take fp32 tensors
        {
            calls.Add(("ssd bidir sum", Impl("naive (flipped copies)"), true, Naive));
        }

        foreach (var (op, impl, bidirectional, call) in calls)
        {
            foreach (var backward in new[] { false, true })
            {
                var t = RowTimer.Time(_device, st => call(st, backward), warmup, repeats);
                yield return BenchRow.Of(op, impl, backward, _s, t, BenchCost.SsdBytes(_s, backward, elementBytes: _dtype.Bytes()),
                    BenchCost.SsdFlops(_s, backward, bidirectional));
            }
        }
    }

    private IEnumerable<IDisposable> Ours(CommandStream st, bool backward, SsdOptions options)
    {
        var fwd = SsdOp.Forward(_x, _dt, _a, _b, _c, options, st);
        return backward ? [fwd, SsdOp.Backward(_dy, fwd, stream: st)] : [fwd];
    }

    /// <summary>
    /// y = SS(x) + flip(SS(flip(x))) + D x with the causal op on flipped copies of x, dt, B and C; its backward flips dy,
    /// runs both causal backwards and adds the reverse run's flipped gradients to the forward run's.
    /// </summary>
    private IEnumerable<IDisposable> Naive(CommandStream st, bool backward)
    {
        var made = new List<IDisposable>();
        T Keep<T>(T t)
            where T : IDisposable
        {
            made.Add(t);
            return t;
        }

        var fwd = Keep(SsdOp.Forward(_x, _dt, _a, _b, _c, Options(), st));
        Tensor[] flipped = [.. new[] { _x, _dt, _b, _c }.Select(t => Keep(Sequence.Flip(t, st)))];
        var noD = Options(withD: false);
        var rev = Keep(SsdOp.Forward(flipped[0], flipped[1], _a, flipped[2], flipped[3], noD, st));
        var y = Keep(Tensor.Empty(_device, "y", [.. _x.Shape]));
        Elementwise.Add(fwd.Y, Keep(Sequence.Flip(rev.Y, st)), y, st);
        if (!backward)
        {
            return made;
        }

        var gf = Keep(SsdOp.Backward(_dy, fwd, stream: st));
        var gr = Keep(SsdOp.Backward(Keep(Sequence.Flip(_dy, st)), rev, stream: st));
        foreach (var (f, r) in new[] { (gf.Dx, gr.Dx), (gf.Ddt, gr.Ddt), (gf.DB, gr.DB), (gf.DC, gr.DC) })
        {
            Elementwise.Add(f, Keep(Sequence.Flip(r, st)), Keep(Tensor.Empty(_device, f.Name, [.. f.Shape])), st);
        }

        Elementwise.Add(gf.DA, gr.DA, Keep(Tensor.Empty(_device, "dA", [.. gf.DA.Shape])), st);
        Elementwise.Add(gf.DDtBias!, gr.DDtBias!, Keep(Tensor.Empty(_device, "ddt_bias", [.. gf.DA.Shape])), st);
        return made;
    }

    public void Dispose() => _inputs.ForEach(t => t.Dispose());
}
