using Mamba2.Model.Ops;
using Mamba2.Model.Tensors;
using Mamba2.Vulkan;

namespace Mamba2.Model.Modules;

/// <summary>
/// The language model: embeddings, blocks (h = h + mixer(rmsnorm(h))), norm_f, tied LM head; next-token
/// cross-entropy as HF (logits[:, :-1] against input_ids[:, 1:], mean). Forward and backward explicit. Parameter names
/// are HF's (backbone.embeddings.weight, backbone.layers.{i}.norm.weight, backbone.layers.{i}.mixer.*,
/// backbone.norm_f.weight; lm_head.weight is the embedding).
/// </summary>
public sealed class Mamba2LM : IDisposable
{
    /// <summary>The tied embedding and LM head table (V, d), by its HF name.</summary>
    public const string EmbeddingsName = "backbone.embeddings.weight";

    private readonly List<Mamba2Layer> _mixers;
    private readonly List<Tensor> _norms;

    private Mamba2LM(Mamba2LMConfig config, Tensor embeddings, List<Mamba2Layer> mixers, List<Tensor> norms, Tensor normF)
    {
        Config = config;
        Embeddings = embeddings;
        _mixers = mixers;
        _norms = norms;
        NormF = normF;
        Layers = [.. mixers.Select((m, i) => new Mamba2Block(norms[i], m))];
    }

    public Mamba2LMConfig Config { get; }

    /// <summary>
    /// What every projection, the LM head and their gradients are computed in (<see cref="Ops.Precision"/>); fp32
    /// (exact) unless set. Setting it sets every layer's; a mode the device cannot run throws
    /// <see cref="MissingFeatureException"/>.
    /// </summary>
    public Precision Precision
    {
        get => _precision;
        set
        {
            if (PrecisionPolicy.WhyNot(Embeddings.Device, value) is { } why)
            {
                throw new MissingFeatureException(why);
            }

            _mixers.ForEach(m => m.Precision = value);
            _precision = value;
        }
    }

    private Precision _precision = Precision.Fp32;

    /// <summary>
    /// In precision bf16, every layer keeps its activations as bf16 tensors (<see cref="Mamba2Layer.StoreActivationsAsBf16"/>):
    /// less memory a step. Off by default; setting it sets every layer's.
    /// </summary>
    public bool StoreActivationsAsBf16
    {
        get => _mixers.Count > 0 && _mixers.TrueForAll(m => m.StoreActivationsAsBf16);
        set => _mixers.ForEach(m => m.StoreActivationsAsBf16 = value);
    }

    /// <summary>backbone.embeddings.weight (vocab, d_model); also the LM head's weight (tied).</summary>
    public Tensor Embeddings { get; }

    /// <summary>The tied LM head's weight: the embedding matrix itself (lm_head.weight is not stored apart).</summary>
    public Tensor LmHeadWeight => Embeddings;

    /// <summary>backbone.norm_f.weight (d_model): the final RMSNorm before the head.</summary>
    public Tensor NormF { get; }

    /// <summary>The residual blocks in order (backbone.layers.{i}).</summary>
    public IReadOnlyList<Mamba2Block> Layers { get; }

    /// <summary>Every parameter with its HF name (the tied head is the embedding, listed once).</summary>
    public IReadOnlyList<(string Name, Tensor Value)> Parameters
    {
        get
        {
            var list = new List<(string, Tensor)> { (EmbeddingsName, Embeddings) };
            for (var i = 0; i < _mixers.Count; i++)
            {
                list.Add(($"backbone.layers.{i}.norm.weight", _norms[i]));
                list.AddRange(_mixers[i].Parameters.Select(q => ($"backbone.layers.{i}.mixer.{q.Name}", q.Value)));
            }

            list.Add(("backbone.norm_f.weight", NormF));
            return list;
        }
    }

    /// <summary>The model from parameter values by HF name (every one of <see cref="ParameterShapes"/>).</summary>
    public static Mamba2LM FromValues(GpuDevice device, Mamba2LMConfig config, IReadOnlyDictionary<string, float[]> values)
    {
        config.Validate();
        var d = config.Mixer.DModel;
        var made = new List<IDisposable>();
        Tensor Load(string name, params int[] shape) =>
            values.TryGetValue(name, out var data) ? Tensor.FromArray(device, name, data, shape)
                : throw new KeyNotFoundException($"Mamba2LM: no value for {name} {ShapeOps.Format(shape)}.");
        try
        {
            var emb = Load(EmbeddingsName, config.VocabSize, d);
            made.Add(emb);
            var mixers = new List<Mamba2Layer>();
            var norms = new List<Tensor>();
            for (var i = 0; i < config.NLayer; i++)
            {
                var prefix = $"backbone.layers.{i}.mixer.";
                var layer = Mamba2Layer.FromValues(device, config.Mixer,
                    values.Where(kv => kv.Key.StartsWith(prefix, StringComparison.Ordinal)).ToDictionary(kv => kv.Key[prefix.Length..], kv => kv.Value));
                made.Add(layer);
                mixers.Add(layer);
                var norm = Load($"backbone.layers.{i}.norm.weight", d);
                made.Add(norm);
                norms.Add(norm);
            }

            return new Mamba2LM(config, emb, mixers, norms, Load("backbone.norm_f.weight", d));
        }
        catch
        {
            made.ForEach(m => m.Dispose());
            throw;
        }
    }

    /// <summary>Every parameter's HF name and shape for <paramref name="config"/>.</summary>
    public static IReadOnlyList<(string Name, int[] Shape)> ParameterShapes(Mamba2LMConfig config)
    {
        var d = config.Mixer.DModel;
        var list = new List<(string, int[])> { (EmbeddingsName, [config.VocabSize, d]) };
        for (var i = 0; i < config.NLayer; i++)
        {
            list.Add(($"backbone.layers.{i}.norm.weight", [d]));
            list.AddRange(Mamba2Layer.Shapes(config.Mixer).Select(q => ($"backbone.layers.{i}.mixer.{q.Name}", q.Shape)));
        }

        list.Add(("backbone.norm_f.weight", [d]));
        return list;
    }

    /// <summary>
    /// mamba_ssm's initialization: embedding N(0, 0.02), mixers as <see cref="Mamba2Layer.Initialize"/>, norms 1, and
    /// out_proj weights rescaled by 1/sqrt(n_layer) (prenorm residual rescale).
    /// </summary>
    public static Mamba2LM Initialize(GpuDevice device, Mamba2LMConfig config, Random rng)
    {
        config.Validate();
        var d = config.Mixer.DModel;
        double Normal() => Math.Sqrt(-2 * Math.Log(1 - rng.NextDouble())) * Math.Cos(2 * Math.PI * rng.NextDouble());
        var made = new List<IDisposable>();
        try
        {
            var emb = Tensor.FromArray(device, EmbeddingsName,
                [.. Enumerable.Range(0, config.VocabSize * d).Select(_ => (float)(0.02 * Normal()))], config.VocabSize, d);
            made.Add(emb);
            var mixers = new List<Mamba2Layer>();
            var norms = new List<Tensor>();
            for (var i = 0; i < config.NLayer; i++)
            {
                var layer = Mamba2Layer.Initialize(device, config.Mixer, rng, outProjScale: (float)(1 / Math.Sqrt(config.NLayer)));
                made.Add(layer);
                mixers.Add(layer);
                var norm = Tensor.FromArray(device, $"backbone.layers.{i}.norm.weight", [.. Enumerable.Repeat(1f, d)], d);
                made.Add(norm);
                norms.Add(norm);
            }

            var normF = Tensor.FromArray(device, "backbone.norm_f.weight", [.. Enumerable.Repeat(1f, d)], d);
            return new Mamba2LM(config, emb, mixers, norms, normF);
        }
        catch
        {
            made.ForEach(m => m.Dispose());
            throw;
        }
    }

    /// <summary>One residual block: h + mixer(rmsnorm(h)). <see cref="NormWeight"/> is backbone.layers.{i}.norm.weight.</summary>
    public sealed record Mamba2Block(Tensor NormWeight, Mamba2Layer Mixer);

    /// <summary>One block's part of <see cref="Activations"/>.</summary>
    internal sealed class BlockActivations : ActivationStore;

    /// <summary>
    /// What the backward reads, kept from the forward; <see cref="Logits"/> is (b, L, vocab). One backward runs from
    /// them: it frees each block's part once that block's gradients are formed.
    /// </summary>
    public sealed class Activations : ActivationStore
    {
        internal Activations(IndexTensor ids) => Ids = ids;

        internal IndexTensor Ids { get; }

        internal List<Tensor> Hidden { get; } = [];          // h_0 .. h_n, (b, L, d)

        internal List<Tensor> NormRstds { get; } = [];       // per block: its norm's saved 1/rms

        internal List<Mamba2Layer.Activations> Mixers { get; } = [];

        /// <summary>
        /// Per block, what only its backward stage reads (the stream's value entering its norm, the norm's 1/rms and
        /// output, the mixer's activations): the backward frees each once its stage has run.
        /// </summary>
        internal List<BlockActivations> Blocks { get; } = [];

        /// <summary>A backward has run from these activations (and freed the blocks' as it went).</summary>
        internal bool Consumed { get; set; }

        internal RmsNormResult NormF { get; set; } = null!;

        /// <summary>(b, L, vocab), from <see cref="Forward(IndexTensor, CommandStream?)"/>; null after <see cref="ForwardLoss"/>.</summary>
        public Tensor Logits { get; internal set; } = null!;

        /// <summary>The loss (and the head's gradients) from <see cref="ForwardLoss"/>; null after Forward.</summary>
        public LinearCrossEntropyResult? Loss { get; internal set; }

        /// <summary>
        /// A training forward's staged recording with its last stage still running, for the backward to go on
        /// from (kept last, so disposing these activations waits for it before freeing anything).
        /// </summary>
        internal StagedRecording? Pending { get; set; }

    }

    /// <summary>Logits (b, L, vocab) for input_ids (b, L).</summary>
    public Activations Forward(IndexTensor ids, CommandStream? stream = null) =>
        Forward(ids, stream, (acts, st, rows, d) =>
        {
            acts.Logits = acts.Keep(Tensor.Empty(Embeddings.Device, "logits", ids.Shape[0], ids.Shape[1], Config.VocabSize));
            Gemm.Run(acts.NormF.Y.View(rows, d), Embeddings, acts.Logits.View(rows, Config.VocabSize), transposeB: true, stream: st, precision: Precision);
        });

    /// <summary>
    /// The training forward: the mean next-token cross-entropy of input_ids (b, L) against <paramref name="targets"/>
    /// (b, L; ignore_index skips a position) without the (b, L, vocab) logits, through
    /// <see cref="LinearCrossEntropy"/> (the head a block of rows at a time). With <paramref name="gradients"/> the
    /// head's gradients are formed on the way, for <see cref="Backward(Activations, CommandStream?)"/>; with
    /// <paramref name="predictions"/> each position's argmax. The result is <see cref="Activations.Loss"/>.
    /// </summary>
    public Activations ForwardLoss(IndexTensor ids, IndexTensor targets, bool gradients = true, bool predictions = false, CommandStream? stream = null,
        long? blockBytes = null) => ForwardLoss(ids, targets, gradients, predictions, stream, blockBytes, null);

    /// <summary>
    /// The training forward with gradients, a layer a submission, telling <paramref name="stageDone"/> the index of
    /// each stage the device has finished (0, 1, ...). Once stage 0 has run, so has everything launched before it (an
    /// earlier step's last stage, left running): the caller can free that step's tensors from then on, a share at a
    /// time while the device runs the later stages.
    /// </summary>
    internal Activations ForwardLoss(IndexTensor ids, IndexTensor targets, bool predictions, long? blockBytes, Action<int> stageDone) =>
        ForwardLoss(ids, targets, gradients: true, predictions, stream: null, blockBytes, stageDone);

    private Activations ForwardLoss(IndexTensor ids, IndexTensor targets, bool gradients, bool predictions, CommandStream? stream, long? blockBytes,
        Action<int>? stageDone)
    {
        if (!targets.Shape.SequenceEqual(ids.Shape))
        {
            throw new ArgumentException($"Mamba2LM: targets must have the shape of input_ids {ShapeOps.Format(ids.Shape)}, got {ShapeOps.Format(targets.Shape)}.", nameof(targets));
        }

        if (gradients)
        {
            Embedding.PrepareBackward(ids, Config.VocabSize);   // before any stage runs: no upload inside the backward's last
        }

        // With gradients the last stage is left running: the backward's first stages are recorded meanwhile.
        return Forward(ids, stream, (acts, st, _, _) =>
            acts.Loss = acts.Keep(LinearCrossEntropy.Run(acts.NormF.Y, Embeddings, targets, gradients, predictions, Precision,
                blockBytes: blockBytes, stream: st)), leaveRunning: gradients, stageDone);
    }

    private Activations Forward(IndexTensor ids, CommandStream? stream, Action<Activations, CommandStream, int, int> head, bool leaveRunning = false,
        Action<int>? stageDone = null)
    {
        if (ids.Shape.Count != 2)
        {
            throw new ArgumentException($"Mamba2LM: input_ids must be (b, L), got {ShapeOps.Format(ids.Shape)}.", nameof(ids));
        }

        int b = ids.Shape[0], l = ids.Shape[1], d = Config.Mixer.DModel, rows = b * l;
        var device = Embeddings.Device;
        var acts = new Activations(ids);
        StagedRecording? staged = null;
        try
        {
            staged = new StagedRecording(device, stream, stageDone, "forward");
            Tensor h = null!;
            // The embedding opens the first layer's stage: a stage of its own would be too short to hide the recording
            // of the next (and the device would idle at every step's start).
            void Embed(CommandStream st)
            {
                h = acts.Keep(Embedding.Forward(ids, Embeddings, st));
                st.Section(ProfileSections.Embedding);
                acts.Hidden.Add(h);
            }
            // Each block's norm reads the stream's last value and the block before's output and writes their sum (the
            // stream's next value, kept for the backward) as it normalizes it: the residual add takes no pass of its own.
            Tensor? added = null;
            ResidualSum? Residual(ActivationStore store)
            {
                if (added is null)
                {
                    return null;
                }

                var next = store.Keep(Tensor.Empty(device, $"h{acts.Hidden.Count}", b, l, d));
                acts.Hidden.Add(next);
                return new ResidualSum(added, next);
            }

            for (var i = 0; i < _mixers.Count; i++)
            {
                var layer = i;
                staged.Stage(st =>
                {
                    if (layer == 0)
                    {
                        Embed(st);
                    }

                    Mamba2Layer.Activations mixer;
                    var block = acts.Keep(new BlockActivations());
                    acts.Blocks.Add(block);
                    var residual = Residual(block);
                    if (Precision != Precision.Fp32 && RmsNorm.CanPack(d, d))
                    {
                        // The norm writes in_proj's operands itself (RmsNorm.ForwardPacked): bf16 ones with no fp32
                        // mixer input, f16 ones with no pass reading it for its max.
                        var packed = block.Keep(TensorCoreGemm.EmptyPacked(device, $"norm{layer}", [b, l, d], Precision.Operands(device)));
                        acts.NormRstds.Add(block.Keep(residual is { } r
                            ? RmsNorm.ForwardPacked(h, _norms[layer], packed, r, Config.NormEps, st)
                            : RmsNorm.ForwardPacked(h, _norms[layer], z: null, packed, Config.NormEps, stream: st)));
                        st.Section(ProfileSections.Norm);
                        mixer = block.Keep(_mixers[layer].Forward(packed, st));
                    }
                    else
                    {
                        var norm = residual is { } r
                            ? RmsNorm.Forward(h, _norms[layer], r, Config.NormEps, st)
                            : RmsNorm.Forward(h, _norms[layer], eps: Config.NormEps, stream: st);
                        acts.NormRstds.Add(block.Keep(norm.Rstd));
                        _mixers[layer].HoldProductInput(block, st, norm.Y);   // the mixer's input: only its in_proj products read it
                        st.Section(ProfileSections.Norm);
                        mixer = block.Keep(_mixers[layer].Forward(norm.Y, st));
                    }

                    if (residual is { } sum)
                    {
                        h = sum.Sum;
                    }

                    acts.Mixers.Add(mixer);
                    added = staged.HandOn(mixer.ReleaseOutput());   // read by the next stage only
                });
            }

            staged.Stage(st =>
            {
                if (_mixers.Count == 0)
                {
                    Embed(st);
                }

                if (Residual(acts) is { } residual)
                {
                    acts.NormF = acts.Keep(RmsNorm.Forward(h, NormF, residual, Config.NormEps, st));
                    h = residual.Sum;
                }
                else
                {
                    acts.NormF = acts.Keep(RmsNorm.Forward(h, NormF, eps: Config.NormEps, stream: st));
                }

                st.Section(ProfileSections.Norm);
                head(acts, st, rows, d);
                st.Section(ProfileSections.LmHead);
            });
            if (leaveRunning && stream is null)
            {
                acts.Pending = acts.Keep(staged);
                staged = null;
            }

            return acts;
        }
        catch
        {
            // The stages still running read what the activations hold: wait for them before freeing it.
            var running = staged;
            staged = null;
            try
            {
                running?.Dispose();
            }
            finally
            {
                acts.Dispose();
            }

            throw;
        }
        finally
        {
            staged?.Dispose();
        }
    }

    /// <summary>The next-token targets of input_ids: ids[:, t + 1], ignore_index at the last position (HF's shift).</summary>
    public static IndexTensor NextTokenTargets(IndexTensor ids)
    {
        int b = ids.Shape[0], l = ids.Shape[1];
        var v = ids.Values;
        var t = new int[b * l];
        for (var i = 0; i < b; i++)
        {
            for (var j = 0; j < l; j++)
            {
                t[i * l + j] = j + 1 < l ? v[i * l + j + 1] : CrossEntropy.DefaultIgnoreIndex;
            }
        }

        return IndexTensor.FromArray(ids.Device, "targets", t, b, l);
    }

    /// <summary>
    /// The gradient of every parameter (by HF name) of the mean cross-entropy <paramref name="loss"/> that
    /// <see cref="CrossEntropy.Forward"/> computed on these activations' logits against <paramref name="targets"/>.
    /// </summary>
    public Dictionary<string, Tensor> BackwardFromLoss(CrossEntropyResult loss, Activations acts, IndexTensor targets)
    {
        using var one = Tensor.FromArray(Embeddings.Device, "dloss", [1f], 1);
        using var dlogits = CrossEntropy.Backward(one, loss, acts.Logits, targets);
        return Backward(dlogits, acts);
    }

    /// <summary>The gradient of every parameter (by HF name) from dlogits (b, L, vocab).</summary>
    public Dictionary<string, Tensor> Backward(Tensor dlogits, Activations acts, CommandStream? stream = null)
    {
        int b = acts.Ids.Shape[0], l = acts.Ids.Shape[1], d = Config.Mixer.DModel, rows = b * l, v = Config.VocabSize;
        ShapeOps.Expect(dlogits, "dlogits", "Mamba2LM backward", b, l, v);
        var device = Embeddings.Device;
        return Backward(acts, stream, (staged, st) =>
        {
            var dl = dlogits.View(rows, v);
            var headGrad = staged.KeepToEnd(Tensor.Empty(device, "dhead", v, d));
            Gemm.Run(dl, acts.NormF.Y.View(rows, d), headGrad, transposeA: true, stream: st, precision: Precision);
            var dNormF = st.Own(Tensor.Empty(device, "dnorm_f", b, l, d));
            Gemm.Run(dl, Embeddings, dNormF.View(rows, d), stream: st, precision: Precision);
            st.Section(ProfileSections.LmHead);
            return (headGrad, dNormF);
        });
    }

    /// <summary>
    /// The gradient of every parameter (by HF name) of the mean loss that <see cref="ForwardLoss"/> computed with
    /// gradients: the head's were formed there, so this starts at norm_f.
    /// </summary>
    public Dictionary<string, Tensor> Backward(Activations acts, CommandStream? stream = null)
    {
        if (acts.Loss?.DHidden is not { } dNormF || acts.Loss.DWeight is not { } headGrad)
        {
            throw new ArgumentException("Mamba2LM backward: these activations hold no head gradients; run ForwardLoss with gradients: true (or Backward(dlogits, acts) after Forward).", nameof(acts));
        }

        return Backward(acts, stream, (_, _) => (headGrad, dNormF));
    }

    /// <summary>
    /// <see cref="Backward(Activations, CommandStream?)"/> a layer a submission, telling <paramref name="listener"/>
    /// of each stage's gradients as they are recorded and again when the device has finished them. Where the
    /// listener <see cref="IGradientListener.TakesLookupApart"/>, the embedding's gradient returned holds the head's
    /// part only until the listener has added the lookup's.
    /// </summary>
    public Dictionary<string, Tensor> Backward(Activations acts, IGradientListener listener) => Backward(acts, listener, leaveLastRunning: false, out _);

    /// <summary>
    /// <see cref="Backward(Activations, IGradientListener)"/> returning with its last stage still running:
    /// <paramref name="lastStage"/>'s disposal waits for it and frees what the stages handed on. Until then the
    /// gradients, <paramref name="acts"/> and its input ids may still be read by the device.
    /// </summary>
    internal Dictionary<string, Tensor> Backward(Activations acts, IGradientListener listener, out IDisposable lastStage)
    {
        var grads = Backward(acts, listener, leaveLastRunning: true, out var running);
        lastStage = running!;
        return grads;
    }

    private Dictionary<string, Tensor> Backward(Activations acts, IGradientListener listener, bool leaveLastRunning, out StagedRecording? running)
    {
        ArgumentNullException.ThrowIfNull(listener);
        if (acts.Loss?.DHidden is not { } dNormF || acts.Loss.DWeight is not { } headGrad)
        {
            throw new ArgumentException("Mamba2LM backward: these activations hold no head gradients; run ForwardLoss with gradients: true.", nameof(acts));
        }

        return Backward(acts, null, (_, _) => (headGrad, dNormF), listener, leaveLastRunning, out running);
    }

    private Dictionary<string, Tensor> Backward(Activations acts, CommandStream? stream, Func<StagedRecording, CommandStream, (Tensor HeadGrad, Tensor DNormF)> head)
        => Backward(acts, stream, head, listener: null, leaveLastRunning: false, out _);

    /// <summary>
    /// The backward from norm_f down, given the head's stage: it returns the head's weight gradient and d norm_f's
    /// output. With <paramref name="leaveLastRunning"/> (and no caller stream) the recording is handed back in
    /// <paramref name="running"/> with its last stage still running, instead of waited for.
    /// </summary>
    private Dictionary<string, Tensor> Backward(Activations acts, CommandStream? stream, Func<StagedRecording, CommandStream, (Tensor HeadGrad, Tensor DNormF)> head,
        IGradientListener? listener, bool leaveLastRunning, out StagedRecording? running)
    {
        running = null;
        if (acts.Consumed)
        {
            throw new ArgumentException("Mamba2LM backward: a backward already ran from these activations and freed them as it went; run the forward again.", nameof(acts));
        }

        acts.Consumed = true;
        int b = acts.Ids.Shape[0], l = acts.Ids.Shape[1], d = Config.Mixer.DModel, v = Config.VocabSize;
        var device = Embeddings.Device;
        var grads = new Dictionary<string, Tensor>();
        var stage = 0;
        void Formed(CommandStream st, IEnumerable<string> names) => listener?.Recorded(stage++, [.. names.Select(n => (n, grads[n]))], st);
        var apart = listener?.TakesLookupApart == true;   // the tied head's part with the first stage, the lookup's to the listener
        StagedRecording? owned = null;   // waited for and freed on return, unless left running
        try
        {
            // Going on from the forward's recording when its last stage still runs: this backward's first stage is
            // recorded meanwhile.
            var continued = stream is null ? acts.Pending : null;
            acts.Pending = null;
            continued?.Continue("backward", listener is null ? null : listener.Completed);
            var staged = continued ?? new StagedRecording(device, stream, listener is null ? null : listener.Completed, "backward");
            owned = staged;
            Tensor headGrad = null!, dh = null!;
            // Where a layer's products take 16-bit operands, its dout's copy comes from its writer (norm_f's backward for
            // the last layer, the block norm's above it for the others): f16 copies get the largest |dout| folded into
            // their scale (the layer converts), bf16 ones are written whole; no pass reads dout for its max or to pack it.
            PackedOperand? dhPacked = null;
            PackedOperand? DoutOperand(int reader, CommandStream st)
            {
                var precision = acts.Mixers[reader].Precision;
                if (PackedColumns.WrittenAsOperands(device, precision, (long)b * l * d))
                {
                    return staged.HandOn(TensorCoreGemm.EmptyPacked(device, "dout", [b * l, d], GemmOperands.Bf16));
                }

                return TensorCoreGemm.EmptyFolded(st, staged.HandOn, device, "dout", [b * l, d], precision);
            }

            static GpuBuffer<uint>? FoldInto(PackedOperand? dout) => dout is { } p && p.Operands.Scaled() ? p.ScaleBits : null;
            static PackedOperand? WriteInto(PackedOperand? dout) => dout is { Operands: GemmOperands.Bf16 } ? dout : null;

            for (var i = _mixers.Count - 1; i >= 0; i--)
            {
                var layer = i;
                staged.Stage(st =>
                {
                    var names = new List<string>();
                    if (layer == _mixers.Count - 1)
                    {
                        // norm_f's backward opens the last layer's stage (a stage of its own would be too short to
                        // hide the recording of the next).
                        (headGrad, var dNormF) = head(staged, st);
                        dhPacked = DoutOperand(layer, st);
                        var nf = RmsNorm.Backward(dNormF, acts.NormF.Rstd, acts.Hidden[^1], NormF, null, null, true, null, st,
                            dxAbsMaxInto: FoldInto(dhPacked), dxPackedInto: WriteInto(dhPacked));
                        grads["backbone.norm_f.weight"] = nf.DWeight;
                        ActivationStore.OwnAllBut(st, nf.All(), nf.DWeight);
                        st.Section(ProfileSections.Norm);
                        dh = nf.Dx;
                        names.Add("backbone.norm_f.weight");
                        if (apart)
                        {
                            grads[EmbeddingsName] = ActivationStore.CopyOf(st, headGrad, "grad." + EmbeddingsName);
                            names.Add(EmbeddingsName);
                        }
                    }

                    var (du, mg) = _mixers[layer].Backward(dh, acts.Mixers[layer], st, dhPacked);
                    st.Own(du);
                    foreach (var (name, g) in mg)
                    {
                        grads[$"backbone.layers.{layer}.mixer.{name}"] = g;
                    }

                    // The residual path's gradient plus the block's, added by the norm's backward as it writes its own.
                    dhPacked = layer > 0 ? DoutOperand(layer - 1, st) : null;   // the embedding's backward reads the last
                    var ng = RmsNorm.Backward(du, acts.NormRstds[layer], acts.Hidden[layer], _norms[layer], z: null, groupSize: null, normBeforeGate: true,
                        dzInto: null, stream: st, residual: dh, dxAbsMaxInto: FoldInto(dhPacked), dxPackedInto: WriteInto(dhPacked));
                    var next = staged.HandOn(ng.Dx);
                    grads[$"backbone.layers.{layer}.norm.weight"] = ng.DWeight;
                    st.Section(ProfileSections.Norm);
                    dh = next;
                    staged.HandOn(acts.Release(acts.Blocks[layer]));   // nothing later reads the block's activations
                    Formed(st, [.. names, .. mg.Select(q => $"backbone.layers.{layer}.mixer.{q.Key}"), $"backbone.layers.{layer}.norm.weight"]);
                });
            }

            staged.Stage(st =>
            {
                if (apart)
                {
                    var lookup = st.Own(Embedding.Backward(dh, acts.Ids, v, st));
                    st.Section(ProfileSections.Embedding);
                    listener!.RecordedLookup(stage++, EmbeddingsName, lookup, st);
                    return;
                }

                // The tied head's part added as the lookup's rows are summed (the bits of adding it after).
                grads[EmbeddingsName] = Embedding.Backward(dh, acts.Ids, v, st, plus: headGrad);
                st.Section(ProfileSections.Embedding);
                Formed(st, [EmbeddingsName]);
            });
            if (leaveLastRunning && stream is null)
            {
                running = staged;
                owned = null;
            }

            return grads;
        }
        catch
        {
            // The stages still running read the gradients: wait for them first.
            var recording = owned;
            owned = null;
            try
            {
                recording?.Dispose();
            }
            finally
            {
                foreach (var g in grads.Values)
                {
                    g.Dispose();
                }
            }

            throw;
        }
        finally
        {
            owned?.Dispose();
        }
    }

    /// <summary>Every layer's recurrent state for b sequences being generated.</summary>
    public sealed class GenerationState(IReadOnlyList<Mamba2Layer.State> layers) : IDisposable
    {
        public IReadOnlyList<Mamba2Layer.State> Layers { get; } = layers;

        public void Dispose()
        {
            foreach (var l in Layers)
            {
                l.Dispose();
            }
        }
    }

    /// <summary>
    /// The prompt through the chunked forward: the state after it and the logits of its last position (b, vocab),
    /// from which the first new token is drawn.
    /// </summary>
    public (GenerationState State, Tensor LastLogits) Prefill(IndexTensor ids)
    {
        int b = ids.Shape[0], l = ids.Shape[1], v = Config.VocabSize;
        var device = Embeddings.Device;
        var last = Tensor.Empty(device, "logits", b, v);
        try
        {
            // Only the last position's logits: the head on b rows, not b L (a long prompt's logits are its largest tensor).
            using var acts = Forward(ids, null, (acts, st, _, d) =>
            {
                var lastHidden = st.Own(Tensor.Empty(device, "last_hidden", b, d));
                Columns.Copy(acts.NormF.Y.View(b, l * d), (l - 1) * d, lastHidden, 0, d, st);
                Gemm.Run(lastHidden, Embeddings, last, transposeB: true, stream: st, precision: Precision);
            });
            return (StatesOf(i => _mixers[i].StateAfter(acts.Mixers[i])), last);
        }
        catch
        {
            last.Dispose();
            throw;
        }
    }

    /// <summary>An empty prefix for b sequences (generation from scratch).</summary>
    public GenerationState NewState(int batch) => StatesOf(i => _mixers[i].NewState(batch));

    /// <summary>Every layer's state, made in order: those made are freed if a later one fails (out of memory).</summary>
    private GenerationState StatesOf(Func<int, Mamba2Layer.State> make)
    {
        var states = new List<Mamba2Layer.State>();
        try
        {
            for (var i = 0; i < _mixers.Count; i++)
            {
                states.Add(make(i));
            }

            return new GenerationState(states);
        }
        catch
        {
            states.ForEach(st => st.Dispose());
            throw;
        }
    }

    /// <summary>One token per sequence, ids (b): logits (b, vocab) for the next one, advancing the state (constant cost).</summary>
    public Tensor Step(IndexTensor ids, GenerationState state)
    {
        if (ids.Shape.Count != 1)
        {
            throw new ArgumentException($"Mamba2LM step: ids must be (b), got {ShapeOps.Format(ids.Shape)}.", nameof(ids));
        }

        int b = ids.Shape[0], d = Config.Mixer.DModel;
        var device = Embeddings.Device;
        var logits = Tensor.Empty(device, "logits", b, Config.VocabSize);
        try
        {
            Shaders.RunIn(device, null, st =>
            {
                var h = st.Own(Embedding.Forward(ids, Embeddings, st));
                for (var i = 0; i < _mixers.Count; i++)
                {
                    var norm = st.Own(RmsNorm.Forward(h, _norms[i], eps: Config.NormEps, stream: st));
                    var o = st.Own(_mixers[i].Step(norm.Y, state.Layers[i], st));
                    var next = st.Own(Tensor.Empty(device, $"h{i + 1}", b, d));
                    Elementwise.Add(h, o, next, st);
                    h = next;
                }

                var nf = st.Own(RmsNorm.Forward(h, NormF, eps: Config.NormEps, stream: st));
                Gemm.Run(nf.Y, Embeddings, logits, transposeB: true, stream: st, precision: Precision);
            });
            return logits;
        }
        catch
        {
            logits.Dispose();
            throw;
        }
    }


    public void Dispose()
    {
        Embeddings.Dispose();
        _mixers.ForEach(m => m.Dispose());
        _norms.ForEach(n => n.Dispose());
        NormF.Dispose();
    }
}
