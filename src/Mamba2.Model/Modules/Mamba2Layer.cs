using Mamba2.Model.Ops;
using Mamba2.Model.Ops.Ssd;
using Mamba2.Model.Tensors;
using Mamba2.Model.Training;
using Mamba2.Vulkan;

namespace Mamba2.Model.Modules;

/// <summary>
/// The Mamba2 mixer (mamba_ssm <c>Mamba2</c>, HF <c>Mamba2Mixer</c>): in_proj to [z, xBC, dt]; depthwise conv1d +
/// SiLU over xBC, split into x, B, C; the SSD with A = -exp(A_log), D, dt_bias and softplus; gated RMSNorm
/// norm(y * silu(z)) per group; out_proj. Forward and backward are explicit (saved activations), as in llm.c.
/// Parameters use the HF / mamba_ssm names (in_proj.weight, conv1d.weight, conv1d.bias, dt_bias, A_log, D,
/// norm.weight, out_proj.weight).
/// </summary>
public sealed class Mamba2Layer : IDisposable
{
    private readonly Dictionary<string, Tensor> _params;

    private Mamba2Layer(Mamba2Config config, Dictionary<string, Tensor> parameters)
    {
        Config = config;
        _params = parameters;
    }

    public Mamba2Config Config { get; }

    /// <summary>
    /// What the projections (in_proj, out_proj), their gradients and the SSD's products are computed in
    /// (<see cref="Ops.Precision"/>, <see cref="Ops.Ssd.SsdOptions.Precision"/>); fp32 (exact) unless set. Setting a
    /// mode the device cannot run throws <see cref="MissingFeatureException"/>. The conv and the norms run in fp32.
    /// </summary>
    public Precision Precision
    {
        get => _precision;
        set
        {
            if (PrecisionPolicy.WhyNot(InProjWeight.Device, value) is { } why)
            {
                throw new MissingFeatureException(why);
            }

            _precision = value;
        }
    }

    private Precision _precision = Precision.Fp32;

    /// <summary>Parameters by name, in a stable order.</summary>
    public IReadOnlyList<(string Name, Tensor Value)> Parameters => [.. _params.Select(kv => (kv.Key, kv.Value))];

    /// <summary>A parameter by its checkpoint name (HF / mamba_ssm: "in_proj.weight", "A_log", ...).</summary>
    public Tensor this[string name] => _params[name];

    /// <summary>in_proj.weight, (2 d_inner + 2 g n + h, d_model).</summary>
    public Tensor InProjWeight => _params["in_proj.weight"];

    /// <summary>in_proj.bias when the config has bias (use_bias in HF).</summary>
    public Tensor? InProjBias => _params.GetValueOrDefault("in_proj.bias");

    /// <summary>conv1d.weight, (d_inner + 2 g n, 1, d_conv).</summary>
    public Tensor Conv1dWeight => _params["conv1d.weight"];

    /// <summary>conv1d.bias when the config has conv_bias.</summary>
    public Tensor? Conv1dBias => _params.GetValueOrDefault("conv1d.bias");

    public Tensor DtBias => _params["dt_bias"];

    /// <summary>A_log (h): A = -exp(A_log).</summary>
    public Tensor ALog => _params["A_log"];

    /// <summary>D, (h) or (h, p) with D_has_hdim.</summary>
    public Tensor D => _params["D"];

    /// <summary>norm.weight, (d_inner): the gated RMSNorm's scale.</summary>
    public Tensor NormWeight => _params["norm.weight"];

    public Tensor OutProjWeight => _params["out_proj.weight"];

    /// <summary>out_proj.bias when the config has bias (use_bias in HF).</summary>
    public Tensor? OutProjBias => _params.GetValueOrDefault("out_proj.bias");

    /// <summary>The shape of every parameter for <paramref name="c"/>.</summary>
    public static IReadOnlyList<(string Name, int[] Shape)> Shapes(Mamba2Config c)
    {
        var list = new List<(string, int[])> { ("in_proj.weight", [c.DInProj, c.DModel]) };
        if (c.Bias)
        {
            list.Add(("in_proj.bias", [c.DInProj]));
        }

        list.Add(("conv1d.weight", [c.ConvDim, 1, c.DConv]));
        if (c.ConvBias)
        {
            list.Add(("conv1d.bias", [c.ConvDim]));
        }

        list.AddRange([("dt_bias", [c.NHeads]), ("A_log", [c.NHeads]), ("D", c.DHasHdim ? [c.DInner] : [c.NHeads]), ("norm.weight", [c.DInner]),
            ("out_proj.weight", [c.DModel, c.DInner])]);
        if (c.Bias)
        {
            list.Add(("out_proj.bias", [c.DModel]));
        }

        return list;
    }

    /// <summary>A layer from given parameter values (host arrays by name, every one of <see cref="Shapes"/>).</summary>
    public static Mamba2Layer FromValues(GpuDevice device, Mamba2Config config, IReadOnlyDictionary<string, float[]> values)
    {
        config.Validate();
        var made = new Dictionary<string, Tensor>();
        try
        {
            foreach (var (name, shape) in Shapes(config))
            {
                if (!values.TryGetValue(name, out var data))
                {
                    throw new KeyNotFoundException($"Mamba2Layer: no value for parameter {name} {ShapeOps.Format(shape)}.");
                }

                made[name] = Tensor.FromArray(device, name, data, shape);
            }

            return new Mamba2Layer(config, made);
        }
        catch
        {
            foreach (var t in made.Values)
            {
                t.Dispose();
            }

            throw;
        }
    }

    /// <summary>
    /// mamba_ssm's initialization: Linear and Conv1d as PyTorch's defaults (uniform +-1/sqrt(fan_in)), dt_bias the
    /// inverse softplus of dt = exp(U(log dt_min, log dt_max)) floored at dt_init_floor, A_log = log(U(A_init_range)),
    /// D = 1, norm weight 1.
    /// </summary>
    /// <param name="outProjScale">Multiplies the out_proj weights (the LM's 1/sqrt(n_layer) prenorm-residual rescale).</param>
    public static Mamba2Layer Initialize(GpuDevice device, Mamba2Config config, Random rng, float outProjScale = 1f)
    {
        float Uniform(double lo, double hi) => (float)(lo + (hi - lo) * rng.NextDouble());
        float[] Fill(int n, Func<float> f) => [.. Enumerable.Range(0, n).Select(_ => f())];
        var values = new Dictionary<string, float[]>();
        foreach (var (name, shape) in Shapes(config))
        {
            var n = shape.Aggregate(1, (a, b) => a * b);
            values[name] = name switch
            {
                "in_proj.weight" or "in_proj.bias" => Fill(n, () => Uniform(-1 / Math.Sqrt(config.DModel), 1 / Math.Sqrt(config.DModel))),
                "out_proj.weight" => Fill(n, () => Uniform(-1 / Math.Sqrt(config.DInner), 1 / Math.Sqrt(config.DInner)) * outProjScale),
                "out_proj.bias" => Fill(n, () => Uniform(-1 / Math.Sqrt(config.DInner), 1 / Math.Sqrt(config.DInner))),
                "conv1d.weight" or "conv1d.bias" => Fill(n, () => Uniform(-1 / Math.Sqrt(config.DConv), 1 / Math.Sqrt(config.DConv))),
                "dt_bias" => Fill(n, () =>
                {
                    var dt = Math.Max(Math.Exp(Uniform(Math.Log(config.DtMin), Math.Log(config.DtMax))), config.DtInitFloor);
                    return (float)(dt + Math.Log(-(Math.Exp(-dt) - 1)));   // inverse softplus: dt + log(1 - exp(-dt))
                }),
                "A_log" => Fill(n, () => (float)Math.Log(Uniform(config.AInitRange.Min, config.AInitRange.Max))),
                _ => Fill(n, () => 1f),   // D, norm.weight
            };
        }

        return FromValues(device, config, values);
    }

    /// <summary>Everything the backward reads, kept from the forward; <see cref="Output"/> is (b, L, d_model).</summary>
    public sealed class Activations : ActivationStore
    {
        internal Activations(int[] inputShape, Precision precision)
        {
            InputShape = inputShape;
            Precision = precision;
        }

        public Tensor Output { get; internal set; } = null!;

        /// <summary>
        /// <see cref="Output"/>, now the caller's to free (the backward does not read it): a model that reads it only
        /// in its next stage frees it then, not with the layer's activations (a 24-layer step's 1.2 GB).
        /// </summary>
        internal Tensor ReleaseOutput() => Release(Output);

        /// <summary>u's shape (b, L, d_model); the backward's products read u as <see cref="InProjInput"/>.</summary>
        internal int[] InputShape { get; }

        /// <summary>The precision the forward ran in, which its backward keeps.</summary>
        internal Precision Precision { get; }

        /// <summary>u as in_proj multiplied it: u itself in fp32, else its packed copy (read again by the weight gradient).</summary>
        internal GemmInput InProjInput { get; set; }

        /// <summary>The gated norm's output as out_proj multiplied it: fp32, or packed (the fp32 tensor is then scratch).</summary>
        internal GemmInput OutProjInput { get; set; }

        /// <summary>in_proj's weight as the forward multiplied it, which the backward multiplies again (<see cref="WeightOperand"/>).</summary>
        internal GemmInput InProjWeight { get; set; }

        /// <summary>out_proj's weight as the forward multiplied it.</summary>
        internal GemmInput OutProjWeight { get; set; }

        /// <summary>The conv's input: columns of in_proj's output (b, L, d_in_proj), kept whole.</summary>
        internal ColumnView XBC { get; set; }

        internal Tensor X { get; set; } = null!;

        internal Tensor B { get; set; } = null!;

        internal Tensor C { get; set; } = null!;

        internal Tensor Dt { get; set; } = null!;

        /// <summary>The norm's gate: columns of the same output as (b L, d_in_proj) rows.</summary>
        internal ColumnView Z { get; set; }

        internal Tensor A { get; set; } = null!;

        internal SsdResult Ssd { get; set; } = null!;

        internal Tensor Y2 { get; set; } = null!;

        internal Tensor NormRstd { get; set; } = null!;

    }

    /// <summary>
    /// In precision bf16, keep the activations as bf16 tensors (<see cref="ActivationType"/>, <see cref="InProjOutputType"/>):
    /// about half the layer's activation memory, for a slower step with today's kernels (docs/PERF.md, twentieth
    /// session: 5.1 GiB less and 8% slower at the 24 x d768 LM's step on an H200). Off by default.
    /// </summary>
    public bool StoreActivationsAsBf16 { get; set; }

    /// <summary>
    /// What the SSD's x, B, C and y (and their gradients) are stored as: bf16 in precision bf16 with
    /// <see cref="StoreActivationsAsBf16"/> (as mamba_ssm's kernels take bf16 activations under autocast), where the
    /// device has 16-bit storage; fp32 otherwise.
    /// </summary>
    public TensorDType ActivationType =>
        StoreActivationsAsBf16 && Precision == Precision.Bf16 && InProjWeight.Device.Capabilities.Storage16Bit ? TensorDType.BF16 : TensorDType.F32;

    /// <summary>
    /// What in_proj's output (z, xBC, dt; kept whole for the backward) is stored as: bf16 where the activations are
    /// (mamba_ssm's in_proj returns bf16 under autocast), in_proj has no bias and the device's products write bf16
    /// (<see cref="TensorCoreGemm.WritesBf16"/>); fp32 otherwise. Rounded once as the product is stored.
    /// </summary>
    public TensorDType InProjOutputType =>
        ActivationType == TensorDType.BF16 && InProjBias is null && TensorCoreGemm.WritesBf16(InProjWeight.Device, Precision.Operands(InProjWeight.Device))
            ? TensorDType.BF16
            : TensorDType.F32;

    private SsdOptions SsdOptionsFor(Tensor D) => new()
    {
        ChunkSize = Config.ChunkSize,
        D = Config.DHasHdim ? D.View(Config.NHeads, Config.HeadDim) : D,
        DtBias = DtBias,
        DtSoftplus = true,
        DtLimit = Config.DtLimit,
        Direction = Config.Causal ? SsdDirection.Causal : SsdDirection.BidirectionalSum,
    };

    /// <summary>The layer on u (b, L, d_model).</summary>
    public Activations Forward(Tensor u, CommandStream? stream = null)
    {
        ShapeOps.ExpectRank(u, "u", "Mamba2Layer", 3);
        ShapeOps.Expect(u, "u", "Mamba2Layer", u.Shape[0], u.Shape[1], Config.DModel);
        return Forward([.. u.Shape], u.Device, (acts, st) => KeepForProducts(acts, st, u.View(u.Shape[0] * u.Shape[1], Config.DModel)), stream);
    }

    /// <summary>
    /// The layer on u (b, L, d_model) already packed as in_proj's operands (a norm that wrote them itself:
    /// <see cref="RmsNorm.ForwardPacked"/>), in a tensor-core precision of the same operand type. u must stay alive
    /// until the backward has run: its products read it again.
    /// </summary>
    public Activations Forward(PackedOperand u, CommandStream? stream = null)
    {
        const string op = "Mamba2Layer (packed u)";
        ShapeOps.ExpectRank(u, "u", op, 3);
        ShapeOps.Expect(u, "u", op, u.Shape[0], u.Shape[1], Config.DModel);
        ShapeOps.ExpectSameDevice(op, InProjWeight, u);
        if (Precision == Precision.Fp32 || Precision.Operands(u.Device) != u.Operands)
        {
            throw new ArgumentException($"{op}: {u} does not hold this layer's operands (precision {Precision}).", nameof(u));
        }

        return Forward([.. u.Shape], u.Device, (_, _) => u.View(u.Shape[0] * u.Shape[1], Config.DModel), stream);
    }

    private Activations Forward(int[] shape, GpuDevice device, Func<Activations, CommandStream, GemmInput> input, CommandStream? stream)
    {
        var c = Config;
        int b = shape[0], l = shape[1], rows = b * l;
        var acts = new Activations(shape, Precision);
        try
        {
            Shaders.RunIn(device, stream, st =>
            {
                // in_proj's output is kept whole: the conv reads xBC and the norm z in place from it, forward and
                // backward; only dt (a few columns) is copied out for the SSD (fp32, as mamba_ssm's kernels take it).
                var zxbcdt = acts.Keep(Tensor.Empty(device, "zxbcdt", InProjOutputType, b, l, c.DInProj));
                acts.InProjInput = input(acts, st);
                acts.InProjWeight = WeightOperand(acts, st, InProjWeight);
                Gemm.Run(acts.InProjInput, acts.InProjWeight, zxbcdt.View(rows, c.DInProj), transposeB: true, stream: st, precision: Precision);
                AddBias(st, zxbcdt.View(rows, c.DInProj), "in_proj.bias");
                st.Section(ProfileSections.Projections);
                acts.Z = new ColumnView(zxbcdt.View(rows, c.DInProj), 0, c.DInner);
                acts.XBC = new ColumnView(zxbcdt, c.DInner, c.ConvDim);
                acts.Dt = acts.Keep(Tensor.Empty(device, "dt", b, l, c.NHeads));
                Columns.Copy(zxbcdt, c.DInner + c.ConvDim, acts.Dt, 0, c.NHeads, st);
                st.Section(ProfileSections.Elementwise);

                var padding = c.Causal ? Conv1dPadding.Causal : Conv1dPadding.Same;
                var gn = c.NGroups * c.DState;
                // In bf16 the conv writes x, B and C as bf16 and the SSD keeps them, and y, so: half their memory and bytes.
                var activations = ActivationType;
                acts.X = acts.Keep(Tensor.Empty(device, "x", activations, b, l, c.NHeads, c.HeadDim));
                acts.B = acts.Keep(Tensor.Empty(device, "B", activations, b, l, c.NGroups, c.DState));
                acts.C = acts.Keep(Tensor.Empty(device, "C", activations, b, l, c.NGroups, c.DState));
                Conv1d.Forward(acts.XBC, Conv1dWeight, Conv1dBias, [acts.X.View(b, l, c.DInner), acts.B.View(b, l, gn), acts.C.View(b, l, gn)],
                    padding, silu: true, st);
                st.Section(ProfileSections.Conv);

                acts.A = acts.Keep(Tensor.Empty(device, "A", c.NHeads));
                Unary.NegExp(ALog, acts.A, st);
                st.Section(ProfileSections.Elementwise);
                using (st.SectionScope(ProfileSections.Ssd))
                {
                    acts.Ssd = acts.Keep(SsdOp.Forward(acts.X, acts.Dt, acts.A, acts.B, acts.C, SsdOptionsFor(D) with { Precision = Precision }, st));
                }

                acts.Y2 = acts.Ssd.Y.View(rows, c.DInner);
                if (Precision != Precision.Fp32 && RmsNorm.CanPack(c.DInner, c.NormGroupSize))
                {
                    // The gated norm writes out_proj's operands itself: bf16 ones straight (no fp32 y, no pass
                    // converting it), f16 ones from an fp32 y whose max the norm found (no pass reading y for it).
                    var packed = acts.Keep(TensorCoreGemm.EmptyPacked(device, "norm_y", [rows, c.DInner], Precision.Operands(device)));
                    acts.NormRstd = acts.Keep(RmsNorm.ForwardPacked(acts.Y2, NormWeight, acts.Z, packed, c.NormEps, c.NormGroupSize, c.NormBeforeGate, st));
                    acts.OutProjInput = packed;
                }
                else
                {
                    var norm = RmsNorm.Forward(acts.Y2, NormWeight, acts.Z, c.NormEps, c.NormGroupSize, c.NormBeforeGate, st);
                    acts.NormRstd = acts.Keep(norm.Rstd);
                    HoldProductInput(acts, st, norm.Y);   // only the products read it
                    acts.OutProjInput = KeepForProducts(acts, st, norm.Y);
                }

                st.Section(ProfileSections.Norm);
                acts.Output = acts.Keep(Tensor.Empty(device, "out", b, l, c.DModel));
                acts.OutProjWeight = WeightOperand(acts, st, OutProjWeight);
                Gemm.Run(acts.OutProjInput, acts.OutProjWeight, acts.Output.View(rows, c.DModel), transposeB: true, stream: st, precision: Precision);
                AddBias(st, acts.Output.View(rows, c.DModel), "out_proj.bias");
                st.Section(ProfileSections.Projections);
            });
            return acts;
        }
        catch
        {
            acts.Dispose();
            throw;
        }
    }

    /// <summary>du (b, L, d_model) and the gradient of every parameter (by name) from dout and the forward's activations.</summary>
    public (Tensor Du, Dictionary<string, Tensor> Grads) Backward(Tensor dout, Activations acts, CommandStream? stream = null) =>
        Backward(dout, acts, stream, null);

    /// <summary>
    /// The same with dout's products reading <paramref name="doutPacked"/>, dout's 16-bit operands from its writer:
    /// f16 forms hold only the scale it folded (<see cref="TensorCoreGemm.PackFolded"/> packs them here), bf16 ones
    /// dout itself.
    /// </summary>
    internal (Tensor Du, Dictionary<string, Tensor> Grads) Backward(Tensor dout, Activations acts, CommandStream? stream, PackedOperand? doutPacked)
    {
        var c = Config;
        var shape = acts.InputShape;
        ShapeOps.Expect(dout, "dout", "Mamba2Layer backward", shape[0], shape[1], c.DModel);
        ShapeOps.ExpectSameDevice("Mamba2Layer backward", InProjWeight, dout);
        int b = shape[0], l = shape[1], rows = b * l, gn = c.NGroups * c.DState;
        var device = dout.Device;
        var grads = new Dictionary<string, Tensor>();
        Tensor? du = null;
        try
        {
            Shaders.RunIn(device, stream, st =>
            {
                var precision = acts.Precision;
                var d2 = dout.View(rows, c.DModel);
                // out_proj: dW = dout^T norm_y; dnorm_y = dout W.
                var dOut = Operand(st, d2, precision, doutPacked);
                grads["out_proj.weight"] = Tensor.Empty(device, "grad.out_proj.weight", c.DModel, c.DInner);
                Gemm.Run(dOut, acts.OutProjInput, grads["out_proj.weight"], transposeA: true, stream: st, precision: precision);
                BiasGrad(st, d2, grads, "out_proj.bias");
                var dNormY = st.Own(Tensor.Empty(device, "dnorm_y", rows, c.DInner));
                Gemm.Run(dOut, acts.OutProjWeight, dNormY, stream: st, precision: precision);
                st.Section(ProfileSections.Projections);

                // The fused projection's gradient is written in place: dz by the norm, dxBC by the conv, ddt copied. In
                // bf16, where no bias reads it, straight as the bf16 operands its two products take (no fp32 copy, no
                // packing pass); else in fp32, then packed. For f16 operands its three writers fold its largest |v|
                // into the packed copy's scale as they go (dInFolded), so packing it reads it once.
                PackedOperand? dInPacked = null;
                PackedOperand? dInFolded = null;
                Tensor? dZxbcdt = null;
                if (InProjBias is null && PackedColumns.WrittenAsOperands(device, precision, (long)rows * c.DInProj))
                {
                    // Its scale word (bf16's 1) is stored by the norm's backward, the first of its writers.
                    dInPacked = st.Own(TensorCoreGemm.EmptyPacked(device, "dzxbcdt", [rows, c.DInProj], GemmOperands.Bf16));
                }
                else
                {
                    dZxbcdt = st.Own(Tensor.Empty(device, "dzxbcdt", rows, c.DInProj));
                    dInFolded = TensorCoreGemm.EmptyFolded(st, st.Own, device, "dzxbcdt", [rows, c.DInProj], precision);
                }

                PackedColumns? Packed(int start, int width) => dInPacked is null ? null : new PackedColumns(dInPacked, start, width);
                ColumnView? InPlace(int start, int width) => dZxbcdt is null ? (ColumnView?)null : new ColumnView(dZxbcdt, start, width);
                var ng = RmsNorm.Backward(dNormY, acts.NormRstd, acts.Y2, NormWeight, acts.Z, c.NormGroupSize, c.NormBeforeGate,
                    InPlace(0, c.DInner), st, Packed(0, c.DInner), dzAbsMaxInto: dInFolded?.ScaleBits);
                grads["norm.weight"] = ng.DWeight;
                ActivationStore.OwnAllBut(st, ng.All(), ng.DWeight);
                st.Section(ProfileSections.Norm);

                SsdGradients sg;
                using (st.SectionScope(ProfileSections.Ssd))
                {
                    sg = SsdOp.Backward(ng.Dx.View(b, l, c.NHeads, c.HeadDim), acts.Ssd, null, st);
                    grads["dt_bias"] = sg.DDtBias!;
                    var dD = sg.DD!.Shape.SequenceEqual(D.Shape) ? sg.DD : null;
                    ActivationStore.OwnAllBut(st, sg.Named().Select(q => q.Gradient), sg.DDtBias, dD);
                    grads["D"] = dD ?? ActivationStore.CopyOf(st, sg.DD!, "grad.D", [.. D.Shape]);   // a copy shaped as D
                    grads["A_log"] = Tensor.Empty(device, "grad.A_log", c.NHeads);
                    Elementwise.Mul(sg.DA, acts.A, grads["A_log"], st);   // A = -exp(A_log): dA_log = dA * A
                }

                var padding = c.Causal ? Conv1dPadding.Causal : Conv1dPadding.Same;
                var cg = Conv1d.Backward([sg.Dx.View(b, l, c.DInner), sg.DB.View(b, l, gn), sg.DC.View(b, l, gn)], acts.XBC, Conv1dWeight,
                    Conv1dBias, padding, silu: true, dZxbcdt is null ? (ColumnView?)null : new ColumnView(dZxbcdt.View(b, l, c.DInProj), c.DInner, c.ConvDim),
                    Packed(c.DInner, c.ConvDim), st, dInFolded?.ScaleBits);
                grads["conv1d.weight"] = cg.DWeight;
                if (cg.DBias is not null)
                {
                    grads["conv1d.bias"] = cg.DBias;
                }

                ActivationStore.OwnAllBut(st, cg.All(), cg.DWeight, cg.DBias);

                st.Section(ProfileSections.Conv);

                var ddt = sg.Ddt.View(rows, c.NHeads);
                if (Packed(c.DInner + c.ConvDim, c.NHeads) is { } ddtInto)
                {
                    Columns.Copy(ddt, 0, ddtInto, st);
                }
                else
                {
                    Columns.Copy(ddt, 0, dZxbcdt!, c.DInner + c.ConvDim, c.NHeads, st, dInFolded?.ScaleBits);
                }

                st.Section(ProfileSections.Elementwise);
                var dIn = dInPacked ?? Operand(st, dZxbcdt!, precision, dInFolded);
                grads["in_proj.weight"] = Tensor.Empty(device, "grad.in_proj.weight", c.DInProj, c.DModel);
                Gemm.Run(dIn, acts.InProjInput, grads["in_proj.weight"], transposeA: true, stream: st, precision: precision);
                if (dZxbcdt is not null)
                {
                    BiasGrad(st, dZxbcdt, grads, "in_proj.bias");   // never packed where there is a bias
                }
                du = Tensor.Empty(device, "du", b, l, c.DModel);
                Gemm.Run(dIn, acts.InProjWeight, du.View(rows, c.DModel), stream: st, precision: precision);
                st.Section(ProfileSections.Projections);
            });
            return (du!, grads);
        }
        catch
        {
            du?.Dispose();
            foreach (var g in grads.Values)
            {
                g.Dispose();
            }

            throw;
        }
    }

    /// <summary>The recurrent state of one layer for generation: the conv's last K - 1 inputs and the SSM state.</summary>
    public sealed class State(Tensor conv, Tensor ssm) : IDisposable
    {
        /// <summary>(b, conv_dim, K - 1), oldest input first.</summary>
        public Tensor Conv { get; } = conv;

        /// <summary>(b, h, p, n).</summary>
        public Tensor Ssm { get; } = ssm;

        public void Dispose()
        {
            Conv.Dispose();
            Ssm.Dispose();
        }
    }

    private void RequireCausal(string what)
    {
        if (!Config.Causal)
        {
            throw new NotSupportedException($"Mamba2Layer: {what} needs a causal layer (a bidirectional one sees the future).");
        }
    }

    private int ConvStateWidth => Math.Max(1, Config.DConv - 1);

    /// <summary>A zero state (an empty prefix) for <paramref name="batch"/> sequences.</summary>
    public State NewState(int batch)
    {
        RequireCausal("generation");
        var device = ALog.Device;
        var c = Config;
        return StateOf(() => Tensor.FromArray(device, "conv_state", new float[batch * c.ConvDim * ConvStateWidth], batch, c.ConvDim, ConvStateWidth),
            () => Tensor.FromArray(device, "ssm_state", new float[batch * c.NHeads * c.HeadDim * c.DState], batch, c.NHeads, c.HeadDim, c.DState));
    }

    /// <summary>The state after a (chunked) forward over a prompt: its last conv inputs and the SSD's final state.</summary>
    public State StateAfter(Activations acts)
    {
        RequireCausal("generation");
        var c = Config;
        var xbcView = acts.XBC;
        int b = xbcView.Tensor.Shape[0], l = xbcView.Tensor.Shape[1], k1 = ConvStateWidth;
        var whole = xbcView.Tensor.ToArray();   // in_proj's output: xBC are its columns [Start, Start + ConvDim)
        var conv = new float[b * c.ConvDim * k1];
        for (var bi = 0; bi < b; bi++)
        {
            for (var j = 0; j < k1; j++)
            {
                var t = l - k1 + j;   // oldest first; positions before the prompt stay 0
                if (t < 0 || c.DConv == 1)
                {
                    continue;
                }

                for (var ch = 0; ch < c.ConvDim; ch++)
                {
                    conv[(bi * c.ConvDim + ch) * k1 + j] = whole[(long)(bi * l + t) * xbcView.Stride + xbcView.Start + ch];
                }
            }
        }

        var device = xbcView.Tensor.Device;
        return StateOf(() => Tensor.FromArray(device, "conv_state", conv, b, c.ConvDim, k1),
            () => Tensor.FromArray(device, "ssm_state", acts.Ssd.FinalStates.ToArray(), b, c.NHeads, c.HeadDim, c.DState));
    }

    /// <summary>A state from its parts, made in order: the conv part is freed if the SSM part fails (out of memory).</summary>
    private static State StateOf(Func<Tensor> conv, Func<Tensor> ssm)
    {
        var convState = conv();
        try
        {
            return new State(convState, ssm());
        }
        catch
        {
            convState.Dispose();
            throw;
        }
    }

    /// <summary>One token for each of b sequences: u (b, d_model) to (b, d_model), advancing <paramref name="state"/> (constant cost).</summary>
    public Tensor Step(Tensor u, State state, CommandStream? stream = null)
    {
        RequireCausal("Step");
        var c = Config;
        ShapeOps.ExpectRank(u, "u", "Mamba2Layer step", 2);
        ShapeOps.Expect(u, "u", "Mamba2Layer step", u.Shape[0], c.DModel);
        var b = u.Shape[0];
        var device = u.Device;
        var output = Tensor.Empty(device, "out", b, c.DModel);
        try
        {
            Shaders.RunIn(device, stream, st =>
            {
                Tensor Temp(string name, params int[] shape) => st.Own(Tensor.Empty(device, name, shape));
                var zx = Temp("zxbcdt", b, c.DInProj);
                Gemm.Run(u, InProjWeight, zx, transposeB: true, stream: st, precision: Precision);
                AddBias(st, zx, "in_proj.bias");
                var z = Temp("z", b, c.DInner);
                var xbc = Temp("xBC", b, c.ConvDim);
                var dt = Temp("dt", b, c.NHeads);
                Columns.Split(st, zx, z, xbc, dt);
                var act = st.Own(Conv1d.Step(xbc, Conv1dWeight, Conv1dBias, state.Conv, st));
                var gn = c.NGroups * c.DState;
                var x = Temp("x", b, c.NHeads, c.HeadDim);
                var bm = Temp("B", b, c.NGroups, c.DState);
                var cm = Temp("C", b, c.NGroups, c.DState);
                Columns.Split(st, act, x.View(b, c.DInner), bm.View(b, gn), cm.View(b, gn));
                var a = Temp("A", c.NHeads);
                Unary.NegExp(ALog, a, st);
                var y = st.Own(SsdOp.Step(x, dt, a, bm, cm, state.Ssm, SsdOptionsFor(D), st));
                var norm = st.Own(RmsNorm.Forward(y.View(b, c.DInner), NormWeight, z, c.NormEps, c.NormGroupSize, c.NormBeforeGate, st));
                Gemm.Run(norm.Y, OutProjWeight, output, transposeB: true, stream: st, precision: Precision);
                AddBias(st, output, "out_proj.bias");
            });
            return output;
        }
        catch
        {
            output.Dispose();
            throw;
        }
    }

    /// <summary>
    /// What products read for <paramref name="x"/>, which two of them multiply: x itself in fp32, else one packed
    /// copy (scratch of the stream) that both read, so x is converted once: <paramref name="packed"/> where x's
    /// writers made it (bf16: written whole; f16 forms: its scale folded, the conversion alone fills it), else a
    /// copy packed here.
    /// </summary>
    private static GemmInput Operand(CommandStream st, Tensor x, Precision precision, PackedOperand? packed = null)
    {
        if (packed is not null)
        {
            if (packed.Operands.Scaled())
            {
                TensorCoreGemm.PackFolded(st, x, packed);
            }

            return packed;
        }

        return precision == Precision.Fp32 ? x : st.Own(Gemm.Pack(x, precision, st));
    }

    /// <summary>
    /// A weight as the forward's product and the backward's take it: where the products read converted 16-bit copies
    /// (f16 always: a pass for the scale, one to convert; bf16 where its variant prefers them), one copy packed in the
    /// forward and kept for the backward (16 bits a weight, held until the backward); else the weight itself, which
    /// each product stages in its kernel.
    /// </summary>
    private GemmInput WeightOperand(Activations acts, CommandStream st, Tensor weight)
    {
        if (Precision == Precision.Fp32)
        {
            return weight;
        }

        var (operands, staging) = PrecisionPolicy.GemmOf(Precision, weight.Device);
        return TensorCoreGemm.Converts(weight.Device, operands, staging) ? acts.Keep(Gemm.Pack(weight, Precision, st)) : weight;
    }

    /// <summary>The same for a forward input the backward multiplies again: the packed copy is kept in <paramref name="acts"/>.</summary>
    private GemmInput KeepForProducts(Activations acts, CommandStream st, Tensor x) =>
        Precision == Precision.Fp32 ? x : acts.Keep(Gemm.Pack(x, Precision, st));

    /// <summary>
    /// Where <paramref name="x"/>, a tensor only this layer's products read, goes once the forward has recorded them:
    /// kept in <paramref name="acts"/> for the backward's fp32 products, else scratch of the stream (the backward
    /// reads the packed copy <see cref="KeepForProducts"/> kept).
    /// </summary>
    internal void HoldProductInput(ActivationStore acts, CommandStream st, Tensor x)
    {
        if (Precision == Precision.Fp32)
        {
            acts.Keep(x);
        }
        else
        {
            st.Own(x);
        }
    }

    private void AddBias(CommandStream st, Tensor y2, string name)
    {
        if (_params.TryGetValue(name, out var bias))
        {
            Bias.Add(st, y2, bias);
        }
    }

    private void BiasGrad(CommandStream st, Tensor dy2, Dictionary<string, Tensor> grads, string name)
    {
        if (_params.ContainsKey(name))
        {
            var g = Tensor.Empty(dy2.Device, "grad." + name, dy2.Shape[^1]);
            grads[name] = g;
            Bias.Grad(st, dy2, g);
        }
    }


    public void Dispose()
    {
        foreach (var t in _params.Values)
        {
            t.Dispose();
        }
    }
}
