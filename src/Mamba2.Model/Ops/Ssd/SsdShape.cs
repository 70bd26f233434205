using Mamba2.Model.Tensors;

namespace Mamba2.Model.Ops.Ssd;

/// <summary>The sizes of one SSD call, read from x, dt, A, B, C and checked against every optional tensor.</summary>
internal sealed record SsdShape(int Batch, int SeqLen, int Heads, int HeadDim, int Groups, int DState, int Chunk)
{
    public int Chunks => (SeqLen + Chunk - 1) / Chunk;

    /// <summary>x, B, C and z are bf16 (so are y and the gradients of those): <see cref="CheckDTypes"/>.</summary>
    public bool Bf16Tensors { get; init; }

    /// <summary>The type of x, B, C and z, and so of y, the gate's g and those inputs' gradients.</summary>
    public TensorDType TensorType => Bf16Tensors ? TensorDType.BF16 : TensorDType.F32;

    /// <summary>
    /// The tensors' types: x, B, C and z share one, fp32 or bf16 (bf16 in precision bf16 only, without the reverse
    /// scan's own tensors); the decay inputs, D and the states are fp32, as mamba_ssm keeps them. Returns whether bf16.
    /// </summary>
    private static bool CheckDTypes(string op, Tensor x, Tensor dt, Tensor A, Tensor B, Tensor C, SsdOptions o)
    {
        foreach (var (t, name) in new[] { (B, "B"), (C, "C"), (o.Z, "z") })
        {
            if (t is not null && t.DType != x.DType)
            {
                throw new ArgumentException($"{op}: {name} is {t.DType.Name()} but x is {x.DType.Name()}; x, B, C and z share one dtype.", name);
            }
        }

        foreach (var (t, name) in new[] { (dt, "dt"), (A, "A"), (o.D, "D"), (o.DtBias, "dt_bias"), (o.InitialStates, "initial_states"), (o.DtRev, "dt_rev"), (o.BRev, "B_rev"), (o.CRev, "C_rev") })
        {
            if (t is not null && t.DType != TensorDType.F32)
            {
                throw new ArgumentException($"{op}: {name} must be float32 (the decay math and the states stay fp32), got {t.DType.Name()}.", name);
            }
        }

        if (x.DType == TensorDType.F32)
        {
            return false;
        }

        if (o.Precision != Precision.Bf16)
        {
            throw new ArgumentException($"{op}: bfloat16 x, B, C and z are taken in precision bf16 only, not {o.Precision.Name()}.", "precision");
        }

        if (o.DtRev is not null || o.BRev is not null || o.CRev is not null)
        {
            throw new ArgumentException($"{op}: with the reverse scan's own dt_rev, B_rev or C_rev the bidirectional forms take float32 x, B, C and z only.", "x");
        }

        return true;   // (a bf16 tensor exists only on a device with 16-bit storage: Tensor.Empty)
    }

    /// <summary>D: (h) or (h, p), or (b, L, h) for the bidirectional forms; dt_bias: (h).</summary>
    public static void CheckSkipAndBias(string op, SsdOptions o, int b, int l, int h, int p)
    {
        if (o.D is { } d && !(d.Rank == 1 && d.Shape[0] == h) && !(d.Rank == 2 && d.Shape[0] == h && d.Shape[1] == p) &&
            !(o.IsBidirectional && d.Rank == 3 && d.Shape.SequenceEqual([b, l, h])))
        {
            var perToken = o.IsBidirectional ? $" or ({b}, {l}, {h})" : "";
            throw new ArgumentException($"{op}: D must have shape ({h}) or ({h}, {p}){perToken}, got {ShapeOps.Format(d.Shape)}.", "D");
        }

        if (o.DtBias is { } bias)
        {
            ShapeOps.Expect(bias, "dt_bias", op, h);
        }
    }

    public static SsdShape Validate(Tensor x, Tensor dt, Tensor A, Tensor B, Tensor C, SsdOptions o)
    {
        const string op = "Ssd";
        ShapeOps.ExpectRank(x, "x", op, 4);
        int b = x.Shape[0], l = x.Shape[1], h = x.Shape[2], p = x.Shape[3];
        ShapeOps.Expect(dt, "dt", $"{op} (x is (b={b}, L={l}, h={h}, p={p}))", b, l, h);
        ShapeOps.Expect(A, "A", op, h);
        ShapeOps.ExpectRank(B, "B", op, 4);
        int g = B.Shape[2], n = B.Shape[3];
        ShapeOps.Expect(B, "B", $"{op} (x is (b={b}, L={l}, h={h}, p={p}))", b, l, g, n);
        ShapeOps.Expect(C, "C", $"{op} (B is (b, L, g={g}, n={n}))", b, l, g, n);
        if (h % g != 0)
        {
            throw new ArgumentException($"{op}: the number of heads ({h}) must be a multiple of the number of groups in B and C ({g}).", nameof(B));
        }

        if (o.ChunkSize is < 16 or > 256)
        {
            throw new ArgumentOutOfRangeException(nameof(o.ChunkSize), o.ChunkSize, $"{op}: chunk_size must be in 16..256.");
        }

        CheckSkipAndBias(op, o, b, l, h, p);
        if (o.Precision != Precision.Fp32 && o.Path == SsdPath.Recurrent)
        {
            throw new ArgumentException($"{op}: the recurrent path computes in fp32 only; precision {o.Precision.Name()} runs on the tiled path.", "precision");
        }

        if (o.Precision != Precision.Fp32 && o.BidirectionalPath == SsdBidirectionalPath.Fused && o.IsBidirectional && SsdOp.WhyNotFusedTensorCores(o) is { } why)
        {
            throw new ArgumentException($"{op}: the fused bidirectional pass in precision {o.Precision.Name()} {why}; use the composed path.", "precision");
        }

        if (!o.IsBidirectional)
        {
            foreach (var (t, name) in new[] { (o.DtRev, "dt_rev"), (o.BRev, "B_rev"), (o.CRev, "C_rev") })
            {
                if (t is not null)
                {
                    throw new ArgumentException($"{op}: {name} is the reverse scan's own tensor; it needs a bidirectional direction.", name);
                }
            }
        }
        else if (o.InitialStates is not null)
        {
            throw new ArgumentException($"{op}: initial_states is for the causal scan; both bidirectional scans start from zero state.", "initial_states");
        }

        if (o.DtRev is { } dtRev)
        {
            ShapeOps.Expect(dtRev, "dt_rev", op, b, l, h);
        }

        if (o.BRev is { } bRev)
        {
            ShapeOps.Expect(bRev, "B_rev", op, b, l, g, n);
        }

        if (o.CRev is { } cRev)
        {
            ShapeOps.Expect(cRev, "C_rev", op, b, l, g, n);
        }

        if (o.Z is { } z)
        {
            ShapeOps.Expect(z, "z", op, b, l, h, p);
        }

        if (o.InitialStates is { } init)
        {
            ShapeOps.Expect(init, "initial_states", op, b, h, p, n);
        }

        var (min, max) = o.DtLimit;
        if (float.IsNaN(min) || float.IsNaN(max) || min > max)
        {
            throw new ArgumentException($"{op}: dt_limit must be (min, max) with min <= max, got ({min}, {max}).", "dt_limit");
        }

        var all = new[] { x, dt, A, B, C, o.D, o.Z, o.DtBias, o.InitialStates, o.DtRev, o.BRev, o.CRev }.OfType<Tensor>().ToArray();
        ShapeOps.ExpectSameDevice(op, all);
        return new SsdShape(b, l, h, p, g, n, o.ChunkSize) { Bf16Tensors = CheckDTypes(op, x, dt, A, B, C, o) };
    }
}
