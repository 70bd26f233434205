using Mamba2.Model.Modules;
using Mamba2.Model.Ops;
using Mamba2.Model.Ops.Ssd;
using Mamba2.Model.Tensors;
using Mamba2.Model.Tests.Reference;
using Mamba2.Tests;
using Mamba2.Vulkan;
using Xunit;

namespace Mamba2.Model.Tests;

public class Mamba2LMTests(GpuFixture gpu)
{
    private GpuDevice Device => gpu.Device;

    /// <summary>
    /// Float64 LM composed from the layer, RMSNorm and matmul references; loss, every parameter gradient, and for the
    /// gradients that sum terms of both signs over every position (A_log, dt_bias) the size of those terms.
    /// </summary>
    private static (double[] Logits, double Loss, Dictionary<string, double[]> Grads, Dictionary<string, double[]> TermScales) Reference(
        Mamba2LMConfig c, Dictionary<string, double[]> p, int[] ids, int b, int l, Func<double, double>? operand = null,
        Func<double, double>? activation = null, Func<double, double>? inProjOutput = null)
    {
        // The rounding the products give the activations they multiply (Mamba2LayerReference.Operand): here the head's
        // rows and its logits gradient.
        operand ??= v => v;
        var scales = new Dictionary<string, double[]>();
        int d = c.Mixer.DModel, v = c.VocabSize, rows = b * l;
        var emb = p["backbone.embeddings.weight"];
        var h = new List<double[]> { ids.SelectMany(t => emb.Skip(t * d).Take(d)).ToArray() };
        var normed = new List<double[]>();
        var layers = new List<Mamba2LayerReference>();
        for (var i = 0; i < c.NLayer; i++)
        {
            var prefix = $"backbone.layers.{i}.mixer.";
            var layer = new Mamba2LayerReference(c.Mixer, p.Where(kv => kv.Key.StartsWith(prefix)).ToDictionary(kv => kv.Key[prefix.Length..], kv => kv.Value), b, l)
            {
                Operand = operand,
                Activation = activation ?? (x => x),
                InProjOutput = inProjOutput ?? (x => x),
            };
            layers.Add(layer);
            var n = RmsNormReference.Forward(h[i], p[$"backbone.layers.{i}.norm.weight"], null, c.NormEps, d, d, false);
            normed.Add(n);
            h.Add(h[i].Zip(layer.Forward(n), (x, y) => x + y).ToArray());
        }

        var hf = RmsNormReference.Forward(h[^1], p["backbone.norm_f.weight"], null, c.NormEps, d, d, false);
        var hfIn = hf.Select(operand).ToArray();
        var logits = new double[rows * v];
        for (var r = 0; r < rows; r++)
        {
            for (var j = 0; j < v; j++)
            {
                for (var k = 0; k < d; k++)
                {
                    logits[r * v + j] += hfIn[r * d + k] * emb[j * d + k];
                }
            }
        }

        // Next-token cross-entropy, mean over b (L - 1) positions, and its gradient.
        var dlogits = new double[rows * v];
        double loss = 0;
        var count = b * (l - 1);
        for (var bi = 0; bi < b; bi++)
        {
            for (var t = 0; t + 1 < l; t++)
            {
                var r = bi * l + t;
                var row = logits.AsSpan(r * v, v).ToArray();
                var m = row.Max();
                var lse = m + Math.Log(row.Sum(x => Math.Exp(x - m)));
                var target = ids[r + 1];
                loss += lse - row[target];
                for (var j = 0; j < v; j++)
                {
                    dlogits[r * v + j] = (Math.Exp(row[j] - lse) - (j == target ? 1 : 0)) / count;
                }
            }
        }

        loss /= count;
        var g = new Dictionary<string, double[]>();
        var dEmb = new double[v * d];
        var dhf = new double[rows * d];
        // The head's products read softmax - onehot as an operand and scale by 1 / count (LinearCrossEntropy).
        var dlogitsIn = dlogits.Select(x => operand(x * count) / count).ToArray();
        for (var r = 0; r < rows; r++)
        {
            for (var j = 0; j < v; j++)
            {
                for (var k = 0; k < d; k++)
                {
                    dEmb[j * d + k] += dlogitsIn[r * v + j] * hfIn[r * d + k];
                    dhf[r * d + k] += dlogitsIn[r * v + j] * emb[j * d + k];
                }
            }
        }

        var (dh, dwf, _) = RmsNormReference.Backward(dhf, h[^1], p["backbone.norm_f.weight"], null, c.NormEps, d, d, false);
        g["backbone.norm_f.weight"] = dwf;
        scales["backbone.norm_f.weight"] = RmsNormReference.WeightTermScale(dhf, h[^1], null, c.NormEps, d, d, false);
        for (var i = c.NLayer - 1; i >= 0; i--)
        {
            var (du, lg) = layers[i].Backward(normed[i], dh);
            foreach (var (name, grad) in lg)
            {
                g[$"backbone.layers.{i}.mixer.{name}"] = grad;
            }

            foreach (var (name, scale) in layers[i].TermScales)
            {
                scales[$"backbone.layers.{i}.mixer.{name}"] = scale;
            }

            var (dn, dw, _) = RmsNormReference.Backward(du, h[i], p[$"backbone.layers.{i}.norm.weight"], null, c.NormEps, d, d, false);
            g[$"backbone.layers.{i}.norm.weight"] = dw;
            scales[$"backbone.layers.{i}.norm.weight"] = RmsNormReference.WeightTermScale(du, h[i], null, c.NormEps, d, d, false);
            dh = dh.Zip(dn, (x, y) => x + y).ToArray();
        }

        for (var r = 0; r < rows; r++)
        {
            for (var k = 0; k < d; k++)
            {
                dEmb[ids[r] * d + k] += dh[r * d + k];
            }
        }

        g["backbone.embeddings.weight"] = dEmb;
        return (logits, loss, g, scales);
    }

    [Fact]
    public void LogitsLossAndEveryGradientMatchTheFloat64Model()
    {
        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        var config = new Mamba2LMConfig(VocabSize: 11, NLayer: 2, new Mamba2Config(DModel: 16) { DState = 8, HeadDim = 8, NGroups = 2, ChunkSize = 16 });
        const int b = 2, l = 21;
        using var lm = Mamba2LM.Initialize(Device, config, rng);
        var ids = Enumerable.Range(0, b * l).Select(_ => rng.Next(config.VocabSize)).ToArray();
        using var input = IndexTensor.FromArray(Device, "input_ids", ids, b, l);
        using var targets = Mamba2LM.NextTokenTargets(input);
        using var acts = lm.Forward(input);
        using var ce = CrossEntropy.Forward(acts.Logits, targets);
        using var one = Tensor.FromArray(Device, "dloss", [1f], 1);
        using var dlogits = CrossEntropy.Backward(one, ce, acts.Logits, targets);
        var grads = lm.Backward(dlogits, acts);
        try
        {
            var p = lm.Parameters.ToDictionary(q => q.Name, q => q.Value.ToArray().Select(x => (double)x).ToArray());
            var (logits, loss, gRef, termScales) = Reference(config, p, ids, b, l);
            var what = $"seed {seed}";
            TestMath.AssertClose(acts.Logits.ToArray(), logits, 1e-5, $"{what}: logits");
            TestMath.AssertClose(ce.Loss.ToArray(), [loss], 1e-6, $"{what}: loss");
            Assert.Equal(gRef.Keys.Order(), grads.Keys.Order());
            Assert.Equal(lm.Parameters.Select(q => q.Name).Order(), grads.Keys.Order());
            foreach (var (name, expected) in gRef)
            {
                // d A_log and d dt_bias (h values each) sum terms of both signs over every position: judged against the
                // size of those terms, which their fp32 error follows (a cancelled total once missed 1e-5 by chance).
                TestMath.AssertClose(grads[name].ToArray(), expected, termScales.GetValueOrDefault(name, expected), 1e-5, $"{what}: grad {name}");
            }
        }
        finally
        {
            foreach (var g in grads.Values)
            {
                g.Dispose();
            }
        }
    }

    /// <summary>Every parameter rounded to bf16, so that bf16 products multiply the model's own values.</summary>
    private static void RoundParametersToBf16(Mamba2LM lm)
    {
        foreach (var (_, value) in lm.Parameters)
        {
            value.CopyFrom([.. value.ToArray().Select(x => TensorCoreGemmTests.Round(x, GemmOperands.Bf16))]);
        }
    }

    /// <summary>What the model's 16-bit activations do to a value (Mamba2Layer.ActivationType): bf16 rounding, or nothing.</summary>
    private static Func<double, double> ModeActivation(Mamba2LM lm) => Bf16Where(lm.Layers[0].Mixer.ActivationType);

    /// <summary>What storing in_proj's output does to a value (Mamba2Layer.InProjOutputType).</summary>
    private static Func<double, double> ModeInProjOutput(Mamba2LM lm) => Bf16Where(lm.Layers[0].Mixer.InProjOutputType);

    private static Func<double, double> Bf16Where(TensorDType dtype) =>
        dtype == TensorDType.BF16 ? x => TensorCoreGemmTests.Round((float)x, GemmOperands.Bf16) : x => x;

    /// <summary>What a mode's products do to an operand: round it to bf16, or to f16 at its scale (fp32-fast).</summary>
    private static Func<double, double> ModeOperand(Precision precision) =>
        precision == Precision.Bf16 ? x => TensorCoreGemmTests.Round((float)x, GemmOperands.Bf16) : x => TensorCoreGemmTests.RoundScaledF16((float)x);

    /// <summary>bf16ViaF16: bf16's products as scaled f16 (MAMBA2_BF16_PRODUCTS=f16), what devices without bf16 cooperative matrices run.</summary>
    [Theory]
    [InlineData(Precision.Fp32Fast, false)]
    [InlineData(Precision.Bf16, false)]
    [InlineData(Precision.Bf16, true)]
    public void TheTrainingForwardAndEveryGradientMatchTheFloat64ModelAtTheModesTolerance(Precision precision, bool bf16ViaF16)
    {
        using var tuning = OpTuning.Override(Device, t => t with { Bf16Products = bf16ViaF16 ? GemmOperands.Bf16ViaF16 : null });
        // Tensor-core products throughout (packed operands kept from the forward, the head in blocks); the
        // parameters rounded to bf16 first, so that the float64 model multiplies the same values.
        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        var config = new Mamba2LMConfig(VocabSize: 13, NLayer: 2, new Mamba2Config(DModel: 16) { DState = 8, HeadDim = 8, NGroups = 2, ChunkSize = 16 });
        const int b = 2, l = 75;
        using var lm = Mamba2LM.Initialize(Device, config, rng);
        if (!PrecisionAvailability.Runs(Device, precision))
        {
            Assert.Throws<MissingFeatureException>(() => lm.Precision = precision);
            return;
        }

        RoundParametersToBf16(lm);

        lm.Precision = precision;
        foreach (var block in lm.Layers)
        {
            block.Mixer.StoreActivationsAsBf16 = true;   // the bf16 tensors' path (the prefill test keeps the default)
        }

        var ids = Enumerable.Range(0, b * l).Select(_ => rng.Next(config.VocabSize)).ToArray();
        using var input = IndexTensor.FromArray(Device, "input_ids", ids, b, l);
        using var targets = Mamba2LM.NextTokenTargets(input);
        using var acts = lm.ForwardLoss(input, targets, blockBytes: 1);
        var grads = lm.Backward(acts);
        try
        {
            var p = lm.Parameters.ToDictionary(q => q.Name, q => q.Value.ToArray().Select(x => (double)x).ToArray());
            // The float64 model rounds what the products round (their operands, once, to bf16 or to scaled f16): what
            // is left is the products' own error, not that of rounded activations carried through two layers.
            var (_, loss, gRef, termScales) = Reference(config, p, ids, b, l, ModeOperand(precision), ModeActivation(lm), ModeInProjOutput(lm));
            var what = $"{precision.Name()}{(bf16ViaF16 ? " via f16" : "")} seed {seed}";
            var tolerance = precision.Tolerance();
            TestMath.AssertClose(acts.Loss!.Loss.ToArray(), [loss], tolerance, $"{what}: loss");
            Assert.Equal(lm.Parameters.Select(q => q.Name).Order(), grads.Keys.Order());
            // Every gradient's verdict, not only the first failure's.
            var failures = gRef
                .Select(e => Record.Exception(() => TestMath.AssertClose(grads[e.Key].ToArray(), e.Value, termScales.GetValueOrDefault(e.Key, e.Value), tolerance,
                    $"{what}: grad {e.Key}"))?.Message)
                .OfType<string>().ToList();
            Assert.True(failures.Count == 0, string.Join(Environment.NewLine, failures));
        }
        finally
        {
            foreach (var g in grads.Values)
            {
                g.Dispose();
            }
        }
    }

    /// <summary>
    /// Generation in a tensor-core mode: a prefill, then the recurrent step (its products in the mode, the SSD step in
    /// fp32), against the float64 model whose products round their operands as the mode does, at every position, at
    /// the mode's tolerance (weights rounded to bf16 first, so that bf16 multiplies the model's own values).
    /// </summary>
    [Theory]
    [InlineData(Precision.Fp32Fast, false)]
    [InlineData(Precision.Bf16, false)]
    [InlineData(Precision.Bf16, true)]
    public void GenerationInTheModesFollowsTheFloat64Model(Precision precision, bool bf16ViaF16)
    {
        using var tuning = OpTuning.Override(Device, t => t with { Bf16Products = bf16ViaF16 ? GemmOperands.Bf16ViaF16 : null });
        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        var config = new Mamba2LMConfig(VocabSize: 19, NLayer: 2, new Mamba2Config(DModel: 32) { DState = 8, HeadDim = 8, NGroups = 2, ChunkSize = 16 });
        const int b = 2, l = 14, prompt = 6;
        using var lm = Mamba2LM.Initialize(Device, config, rng);
        if (!PrecisionAvailability.Runs(Device, precision))
        {
            return;
        }

        RoundParametersToBf16(lm);

        lm.Precision = precision;
        var v = config.VocabSize;
        var ids = Enumerable.Range(0, b * l).Select(_ => rng.Next(v)).ToArray();
        var p = lm.Parameters.ToDictionary(q => q.Name, q => q.Value.ToArray().Select(x => (double)x).ToArray());
        var (full, _, _, _) = Reference(config, p, ids, b, l, ModeOperand(precision));
        // The prefill is the chunked forward, whose activations are rounded as the layers store them (fp32 by default).
        var (chunked, _, _, _) = Reference(config, p, ids, b, l, ModeOperand(precision), ModeActivation(lm), ModeInProjOutput(lm));
        var (exact, _, _, _) = Reference(config, p, ids, b, l);
        double[] At(int t, double[]? of = null) => [.. Enumerable.Range(0, b).SelectMany(bi => (of ?? full).Skip((bi * l + t) * v).Take(v))];
        var head = Enumerable.Range(0, b).SelectMany(bi => ids.Skip(bi * l).Take(prompt)).ToArray();
        using var promptIds = IndexTensor.FromArray(Device, "prompt", head, b, prompt);
        var (state, last) = lm.Prefill(promptIds);
        var what = $"{precision.Name()}{(bf16ViaF16 ? " via f16" : "")} seed {seed}";
        using (state)
        using (last)
        {
            TestMath.AssertClose(last.ToArray(), At(prompt - 1, chunked), precision.Tolerance(), $"{what}: prefill's last logits");
            var offExact = 0.0;
            for (var t = prompt; t < l; t++)
            {
                using var token = IndexTensor.FromArray(Device, "token", [ids[t], ids[l + t]], b);
                using var logits = lm.Step(token, state);
                var got = logits.ToArray();
                TestMath.AssertClose(got, At(t), precision.Tolerance(), $"{what}: step {t}");
                offExact = Math.Max(offExact, TestMath.RelativeError(got, At(t, exact)));
            }

            // The steps' products ran in the mode: off the unrounded model by more than fp32 rounding.
            Assert.True(offExact > 1e-5, $"{what}: the steps are as exact as fp32 ({offExact})");
        }
    }

    [Fact]
    public void TheTrainingForwardsLossGradientsAndPredictionsMatchTheFloat64Model()
    {
        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        var config = new Mamba2LMConfig(VocabSize: 13, NLayer: 2, new Mamba2Config(DModel: 16) { DState = 8, HeadDim = 8, NGroups = 2, ChunkSize = 16 });
        const int b = 2, l = 75;   // 150 rows: head blocks of 64, 64 and 22
        using var lm = Mamba2LM.Initialize(Device, config, rng);
        var ids = Enumerable.Range(0, b * l).Select(_ => rng.Next(config.VocabSize)).ToArray();
        using var input = IndexTensor.FromArray(Device, "input_ids", ids, b, l);
        using var targets = Mamba2LM.NextTokenTargets(input);
        using var acts = lm.ForwardLoss(input, targets, predictions: true, blockBytes: 1);
        Assert.Null(acts.Logits);
        var grads = lm.Backward(acts);
        try
        {
            var p = lm.Parameters.ToDictionary(q => q.Name, q => q.Value.ToArray().Select(x => (double)x).ToArray());
            var (logits, loss, gRef, termScales) = Reference(config, p, ids, b, l);
            var what = $"seed {seed}";
            TestMath.AssertClose(acts.Loss!.Loss.ToArray(), [loss], 1e-5, $"{what}: loss");
            Assert.Equal(lm.Parameters.Select(q => q.Name).Order(), grads.Keys.Order());
            foreach (var (name, expected) in gRef)
            {
                TestMath.AssertClose(grads[name].ToArray(), expected, termScales.GetValueOrDefault(name, expected), 1e-5, $"{what}: grad {name}");
            }

            var predicted = acts.Loss.Predictions();
            for (var r = 0; r < b * l; r++)
            {
                var row = logits.AsSpan(r * config.VocabSize, config.VocabSize).ToArray();
                Assert.True(row[predicted[r]] >= row.Max() - 1e-5 * row.Max(Math.Abs), $"{what}: row {r} predicts {predicted[r]}");
            }
        }
        finally
        {
            foreach (var g in grads.Values)
            {
                g.Dispose();
            }
        }

        // The backward freed the blocks' activations as it went: a second one from them is refused, not run on freed memory.
        var again = Assert.Throws<ArgumentException>(() => lm.Backward(acts));
        Assert.Equal("acts", again.ParamName);
        Assert.Contains("already ran", again.Message);

        // The gradient-free forward (evaluation) has no head gradients to start a backward from.
        using var eval = lm.ForwardLoss(input, targets, gradients: false);
        Assert.Equal("acts", Assert.Throws<ArgumentException>(() => lm.Backward(eval)).ParamName);
        using var wrong = IndexTensor.FromArray(Device, "targets", new int[b * (l - 1)], b, l - 1);
        Assert.Equal("targets", Assert.Throws<ArgumentException>(() => lm.ForwardLoss(input, wrong)).ParamName);
    }

    /// <summary>Records every call, and copies each stage's gradients in its stream as data parallelism does.</summary>
    private sealed class RecordingListener(GpuDevice device) : IGradientListener, IDisposable
    {
        public List<string> Calls { get; } = [];

        public List<List<string>> Stages { get; } = [];   // the names each stage formed

        public Dictionary<string, Tensor> Copies { get; } = [];

        public void Recorded(int stage, IReadOnlyList<(string Name, Tensor Gradient)> gradients, CommandStream stream)
        {
            Calls.Add($"recorded {stage}");
            Stages.Add([.. gradients.Select(g => g.Name)]);
            foreach (var (name, g) in gradients)
            {
                var copy = Tensor.Empty(device, name, [.. g.Shape]);
                stream.Copy(g.Buffer, 0, copy.Buffer, 0, (ulong)g.Length * 4);
                Copies.Add(name, copy);
            }
        }

        public void Completed(int stage) => Calls.Add($"completed {stage}");

        public void Dispose() => Copies.Values.ToList().ForEach(t => t.Dispose());
    }

    [Fact]
    public void IdsInHostOrDeviceMemoryGiveTheSameBits()
    {
        // A batch's ids and targets (and the embedding gradient's grouping of them) live in device memory, filled by a
        // copy launched as they are made; a few ids live in host memory: the loss and every gradient are the same bits.
        var rng = new Random(TestMath.NewSeed());
        var config = new Mamba2LMConfig(VocabSize: 13, NLayer: 2, new Mamba2Config(DModel: 16) { DState = 8, HeadDim = 8, NGroups = 2, ChunkSize = 16 });
        const int b = 2, l = 37;
        using var lm = Mamba2LM.Initialize(Device, config, rng);
        var ids = Enumerable.Range(0, b * l).Select(_ => rng.Next(config.VocabSize)).ToArray();
        (float Loss, Dictionary<string, float[]> Grads) Run(MemoryKind residence)
        {
            using var input = IndexTensor.FromArrayIn(residence, Device, "input_ids", ids, b, l);
            using var next = Mamba2LM.NextTokenTargets(input);
            using var targets = IndexTensor.FromArrayIn(residence, Device, "targets", next.Values, b, l);
            using var acts = lm.ForwardLoss(input, targets);
            var grads = lm.Backward(acts);
            try
            {
                return (acts.Loss!.Loss.ToArray()[0], grads.ToDictionary(g => g.Key, g => g.Value.ToArray()));
            }
            finally
            {
                foreach (var g in grads.Values)
                {
                    g.Dispose();
                }
            }
        }

        var host = Run(MemoryKind.Upload);
        var device = Run(MemoryKind.Device);
        Assert.Equal(host.Loss, device.Loss);
        Assert.Equal(host.Grads.Keys.Order(), device.Grads.Keys.Order());
        foreach (var (name, g) in host.Grads)
        {
            Assert.True(g.AsSpan().SequenceEqual(device.Grads[name]), $"grad {name} differs");
        }

        Assert.Throws<ArgumentOutOfRangeException>(() => IndexTensor.FromArrayIn(MemoryKind.Readback, Device, "ids", ids, b, l));
    }

    [Fact]
    public void AListenedBackwardNamesEachGradientOnceAndCompletesEachStageInOrder()
    {
        var config = new Mamba2LMConfig(VocabSize: 13, NLayer: 3, new Mamba2Config(DModel: 16) { DState = 8, HeadDim = 8, ChunkSize = 16 });
        using var lm = Mamba2LM.Initialize(Device, config, new Random(TestMath.NewSeed()));
        using var input = IndexTensor.FromArray(Device, "input_ids", [.. Enumerable.Range(0, 2 * 21).Select(i => i * 5 % 13)], 2, 21);
        using var targets = Mamba2LM.NextTokenTargets(input);
        using var acts = lm.ForwardLoss(input, targets);
        using var listener = new RecordingListener(Device);
        var grads = lm.Backward(acts, listener);
        try
        {
            // norm_f with the last layer, the two layers below, the embedding: each stage recorded before it completes,
            // in order; the forward's last stage, still running when the backward began, is not reported.
            var order = listener.Calls.Select(c => (Kind: c.Split(' ')[0], Stage: int.Parse(c.Split(' ')[1], System.Globalization.CultureInfo.InvariantCulture))).ToList();
            Assert.Equal(Enumerable.Range(0, 4), order.Where(c => c.Kind == "recorded").Select(c => c.Stage));
            Assert.Equal(Enumerable.Range(0, 4), order.Where(c => c.Kind == "completed").Select(c => c.Stage));
            Assert.All(Enumerable.Range(0, 4), s => Assert.True(order.IndexOf(("recorded", s)) < order.IndexOf(("completed", s))));
            Assert.Contains("backbone.norm_f.weight", listener.Stages[0]);
            Assert.Contains("backbone.layers.2.norm.weight", listener.Stages[0]);
            Assert.Equal(["backbone.embeddings.weight"], listener.Stages[3]);
            Assert.Equal(grads.Keys.Order(), listener.Copies.Keys.Order());
            foreach (var (name, g) in grads)
            {
                Assert.Equal(g.ToArray(), listener.Copies[name].ToArray());   // copied after the gradient was formed
            }
        }
        finally
        {
            grads.Values.ToList().ForEach(g => g.Dispose());
        }
    }

    [Fact]
    public void TypedParametersAreTheOnesNamedForCheckpoints()
    {
        var config = new Mamba2LMConfig(VocabSize: 7, NLayer: 3, new Mamba2Config(DModel: 16) { DState = 8, HeadDim = 8, ChunkSize = 16 });
        using var lm = Mamba2LM.Initialize(Device, config, new Random(5));
        var named = lm.Parameters.ToDictionary(q => q.Name, q => q.Value);
        Assert.Same(named["backbone.embeddings.weight"], lm.Embeddings);
        Assert.Same(lm.Embeddings, lm.LmHeadWeight);
        Assert.Same(named["backbone.norm_f.weight"], lm.NormF);
        Assert.Equal(config.NLayer, lm.Layers.Count);
        for (var i = 0; i < config.NLayer; i++)
        {
            Assert.Same(named[$"backbone.layers.{i}.norm.weight"], lm.Layers[i].NormWeight);
            Assert.Same(named[$"backbone.layers.{i}.mixer.in_proj.weight"], lm.Layers[i].Mixer.InProjWeight);
            Assert.Same(named[$"backbone.layers.{i}.mixer.A_log"], lm.Layers[i].Mixer.ALog);
        }
    }

    [Fact]
    public void WithoutAStreamEachLayerIsASubmissionThatFreesItsScratch()
    {
        // A private device: the shared one's peak counter sees the tests that run beside this one.
        using var device = GpuDevice.Create(GpuFixture.Options);
        var rng = new Random(TestMath.NewSeed());
        var config = new Mamba2LMConfig(VocabSize: 13, NLayer: 4, new Mamba2Config(DModel: 32) { DState = 16, HeadDim = 16, ChunkSize = 16 });
        using var lm = Mamba2LM.Initialize(device, config, rng);
        using var ids = IndexTensor.FromArray(device, "input_ids", [.. Enumerable.Range(0, 3 * 40).Select(_ => rng.Next(13))], 3, 40);
        using var dlogits = Tensor.FromArray(device, "dlogits", TestMath.Uniform(rng, 3 * 40 * 13, -1, 1), 3, 40, 13);

        (Dictionary<string, float[]> Grads, ulong Peak) Run(bool oneStream)
        {
            var before = device.Memory.AllocatedBytes;
            device.Memory.ResetPeak();
            using var s = oneStream ? device.BeginStream() : null;
            using var acts = lm.Forward(ids, s);
            var grads = lm.Backward(dlogits, acts, s);
            s?.Submit();
            var peak = device.Memory.PeakAllocatedBytes - before;
            var values = grads.ToDictionary(kv => kv.Key, kv => kv.Value.ToArray());
            foreach (var g in grads.Values)
            {
                g.Dispose();
            }

            return (values, peak);
        }

        var (staged, stagedPeak) = Run(oneStream: false);
        var (single, singlePeak) = Run(oneStream: true);
        Assert.Equal(single.Keys.Order(), staged.Keys.Order());
        foreach (var (name, g) in single)
        {
            Assert.Equal(g, staged[name]);   // the same kernels in the same order: the same bits
        }

        // One submission holds every layer's scratch to its end; staged, one layer's at a time.
        Assert.True(stagedPeak < 0.8 * singlePeak, $"peak {stagedPeak} bytes staged against {singlePeak} in one submission");
        Assert.Empty(device.ValidationLog.Drain());
    }

    [Theory]
    [InlineData(false, true, SsdPath.Auto, Precision.Fp32)]
    [InlineData(true, true, SsdPath.Auto, Precision.Fp32)]
    [InlineData(false, true, SsdPath.Tiled, Precision.Fp32)]
    [InlineData(false, false, SsdPath.Auto, Precision.Fp32)]
    [InlineData(true, false, SsdPath.Tiled, Precision.Fp32)]
    [InlineData(false, true, SsdPath.Tiled, Precision.Bf16)]
    [InlineData(true, true, SsdPath.Tiled, Precision.Fp32Fast)]
    [InlineData(false, false, SsdPath.Tiled, Precision.Bf16)]
    [InlineData(false, true, SsdPath.Tiled, Precision.Bf16, true)]
    [InlineData(true, false, SsdPath.Tiled, Precision.Bf16, true)]
    public void OutOfMemoryAnywhereInAStepLeaksNothing(bool oneStream, bool causal, SsdPath path, Precision precision, bool bf16Activations = false)
    {
        // A private device: the shared one's counters see the tests that run beside this one.
        using var device = GpuDevice.Create(GpuFixture.Options);
        if (!PrecisionAvailability.Runs(device, precision))
        {
            return;
        }

        OpTuning.Set(device, OpTuning.Of(device) with { SsdPath = path });
        var seed = TestMath.NewSeed();
        var rng = new Random(seed);
        var config = new Mamba2LMConfig(VocabSize: 13, NLayer: 3, new Mamba2Config(DModel: 32) { DState = 16, HeadDim = 16, ChunkSize = 16, Causal = causal });
        using var lm = Mamba2LM.Initialize(device, config, rng);
        lm.Precision = precision;
        lm.StoreActivationsAsBf16 = bf16Activations;
        using var ids = IndexTensor.FromArray(device, "input_ids", [.. Enumerable.Range(0, 2 * 37).Select(_ => rng.Next(13))], 2, 37);
        using var dlogits = Tensor.FromArray(device, "dlogits", TestMath.Uniform(rng, 2 * 37 * 13, -1, 1), 2, 37, 13);

        Dictionary<string, float[]> Step()
        {
            using var s = oneStream ? device.BeginStream() : null;
            using var acts = lm.Forward(ids, s);
            var grads = lm.Backward(dlogits, acts, s);
            try
            {
                s?.Submit();
                return grads.ToDictionary(kv => kv.Key, kv => kv.Value.ToArray());
            }
            finally
            {
                foreach (var g in grads.Values)
                {
                    g.Dispose();
                }
            }
        }

        Step();   // the first step makes what the model keeps for the next ones (small constants)
        var before = device.Memory.AllocatedBytes;
        var reference = Step();
        Assert.Equal(before, device.Memory.AllocatedBytes);

        // Out of memory at allocations spread over the step, from the forward's first buffers to the backward's last.
        OutOfMemorySweep.Run(device, () => Step(), failed =>
            Assert.True(device.Memory.AllocatedBytes == before, $"seed {seed}, {failed}: {device.Memory.AllocatedBytes - before} bytes left live"));

        // The model is unharmed: the next step's gradients are the same bits.
        var again = Step();
        foreach (var (name, g) in reference)
        {
            Assert.Equal(g, again[name]);
        }

        Assert.Empty(device.ValidationLog.Drain());
    }

    [Fact]
    public void ALayersOutputLivesUntilTheNextStageOnly()
    {
        // The backward never reads a layer's output; the next block's norm does, so staged it is freed once that
        // stage has run (the last one's with the recording), and the gradients are those of one submission.
        var rng = new Random(TestMath.NewSeed());
        var config = new Mamba2LMConfig(VocabSize: 11, NLayer: 4, new Mamba2Config(DModel: 16) { DState = 8, HeadDim = 8, ChunkSize = 16 });
        using var lm = Mamba2LM.Initialize(Device, config, rng);
        using var ids = IndexTensor.FromArray(Device, "input_ids", [.. Enumerable.Range(0, 2 * 20).Select(_ => rng.Next(11))], 2, 20);
        using var targets = Mamba2LM.NextTokenTargets(ids);
        using (var acts = lm.ForwardLoss(ids, targets))
        {
            var outputs = acts.Mixers.Select(m => m.Output.Buffer).ToList();
            Assert.All(outputs.Take(2), o => Assert.True(o.IsDisposed));   // read by stages that have run
            var grads = lm.Backward(acts);
            Assert.All(outputs, o => Assert.True(o.IsDisposed));
            grads.Values.ToList().ForEach(g => g.Dispose());
        }

        var s = Device.BeginStream();
        Mamba2LM.Activations one;
        Dictionary<string, Tensor> oneGrads;
        try
        {
            one = lm.ForwardLoss(ids, targets, stream: s);
            oneGrads = lm.Backward(one, s);
            s.Submit();
            Assert.All(one.Mixers, m => Assert.False(m.Output.Buffer.IsDisposed));
        }
        finally
        {
            s.Dispose();
        }

        using (one)
        {
            Assert.All(one.Mixers, m => Assert.True(m.Output.Buffer.IsDisposed));   // the stream owned them
            oneGrads.Values.ToList().ForEach(g => g.Dispose());
        }
    }
}
