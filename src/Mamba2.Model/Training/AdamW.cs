using System.Runtime.InteropServices;
using Mamba2.Model.Ops;
using Mamba2.Model.Tensors;
using Mamba2.Vulkan;

namespace Mamba2.Model.Training;

/// <summary>A parameter the optimizer updates, and whether weight decay applies to it (not to A_log, D, dt_bias, norms, biases).</summary>
public sealed record OptimizerParameter(string Name, Tensor Value, bool WeightDecay);

/// <summary>
/// AdamW as <c>torch.optim.AdamW</c> (decoupled weight decay, bias-corrected moments, same defaults: lr 1e-3,
/// betas (0.9, 0.999), eps 1e-8, weight_decay 0.01), with optional gradient-norm clipping as
/// <c>torch.nn.utils.clip_grad_norm_</c> computed on the GPU (fixed-order sums, no host round trip).
/// </summary>
public sealed class AdamW : IDisposable
{
    [StructLayout(LayoutKind.Sequential)]
    private readonly record struct Push(uint N, float Lr, float Beta1, float OneMinusBeta1, float Beta2, float OneMinusBeta2, float Eps,
        float WeightDecay, float BiasCorrection1, float BiasCorrection2, uint UseClip);

    [StructLayout(LayoutKind.Sequential)]
    private readonly record struct NormPush(uint Count, uint Stride, float MaxNorm);

    [StructLayout(LayoutKind.Sequential)]
    private readonly record struct SumPush(uint N, uint Parts);

    private readonly GpuDevice _device;
    private readonly List<(OptimizerParameter Param, Tensor M, Tensor V)> _state = [];
    private readonly Tensor _clip;      // [norm, coefficient]
    private readonly Tensor _sums;      // one sum of squares per parameter, _stride floats apart (bindable offsets)
    private readonly int _stride;

    public AdamW(IReadOnlyList<OptimizerParameter> parameters, float lr = 1e-3f, (double Beta1, double Beta2)? betas = null, double eps = 1e-8,
        float weightDecay = 0.01f)
    {
        if (parameters.Count == 0)
        {
            throw new ArgumentException("AdamW: no parameters to optimize.", nameof(parameters));
        }

        var (b1, b2) = betas ?? (0.9, 0.999);
        if (!(b1 is >= 0 and < 1) || !(b2 is >= 0 and < 1))
        {
            throw new ArgumentOutOfRangeException(nameof(betas), betas, "AdamW: betas must be in [0, 1).");
        }

        if (!(eps > 0) || !(weightDecay >= 0) || !(lr >= 0))
        {
            throw new ArgumentOutOfRangeException(nameof(lr), "AdamW: lr and weight_decay must be >= 0 and eps > 0.");
        }

        _device = parameters[0].Value.Device;
        ShapeOps.ExpectSameDevice("AdamW", [.. parameters.Select(p => p.Value)]);
        (LearningRate, Beta1, Beta2, Eps, WeightDecay) = (lr, b1, b2, eps, weightDecay);
        try
        {
            foreach (var p in parameters)
            {
                var zeros = new float[p.Value.Length];
                var m = Tensor.FromArray(_device, p.Name + ".exp_avg", zeros, [.. p.Value.Shape]);
                try
                {
                    _state.Add((p, m, Tensor.FromArray(_device, p.Name + ".exp_avg_sq", zeros, [.. p.Value.Shape])));
                }
                catch
                {
                    m.Dispose();   // not in _state yet: Dispose below cannot see it
                    throw;
                }
            }

            _clip = Tensor.FromArray(_device, "grad_clip", [0f, 1f], 2);
            _stride = (int)Math.Max(1, _device.Capabilities.MinStorageBufferOffsetAlignment / sizeof(float));
            _sums = Tensor.Empty(_device, "grad_sq_sums", parameters.Count * _stride);
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    public float LearningRate { get; set; }

    public double Beta1 { get; }

    public double Beta2 { get; }

    public double Eps { get; }

    public float WeightDecay { get; }

    /// <summary>Steps taken so far (the bias corrections use it).</summary>
    public long StepCount { get; private set; }

    public IReadOnlyList<OptimizerParameter> Parameters => [.. _state.Select(s => s.Param)];

    /// <summary>The first and second moment of a parameter (its optimizer state), for checkpoints.</summary>
    public (Tensor ExpAvg, Tensor ExpAvgSq) State(int index) => (_state[index].M, _state[index].V);

    /// <summary>Restores the step count after loading the moments into <see cref="State"/> (resuming from a checkpoint).</summary>
    public void Restore(long stepCount) => StepCount = stepCount >= 0 ? stepCount : throw new ArgumentOutOfRangeException(nameof(stepCount));

    /// <summary>
    /// A listener for a staged backward (<see cref="Modules.Mamba2LM.Backward(Modules.Mamba2LM.Activations, Modules.IGradientListener)"/>)
    /// that records this step, with the gradients by parameter name, into the stage that forms the last of them.
    /// </summary>
    public OptimizerStepListener StepWhenFormed(float? maxGradNorm = null) => new(this, maxGradNorm);

    /// <summary>
    /// One step from <paramref name="grads"/> (in parameter order, each shaped as its parameter). With
    /// <paramref name="maxGradNorm"/>, gradients are scaled by min(1, max / (norm + 1e-6)) first;
    /// <see cref="LastGradNorm"/> then reads the pre-clip norm.
    /// </summary>
    public void Step(IReadOnlyList<Tensor> grads, float? maxGradNorm = null, CommandStream? stream = null)
    {
        CheckGradients(grads);
        CheckMaxNorm(maxGradNorm);
        Shaders.RunIn(_device, stream, st =>
        {
            if (maxGradNorm is not null)
            {
                Squares(st, [.. grads.Select((g, i) => (i, g))]);
            }

            Update(st, grads, maxGradNorm);
        });
    }

    /// <summary>
    /// The sums of squares that clipping reads, of some parameters' gradients (by parameter index), into
    /// <paramref name="st"/>: a staged backward records them in the stage that forms the gradients, so the step in
    /// the last stage has less to record (<see cref="OptimizerStepListener"/>).
    /// </summary>
    internal void RecordSquares(CommandStream st, IReadOnlyList<(int Index, Tensor Gradient)> grads)
    {
        foreach (var (i, g) in grads)
        {
            CheckGradient(i, g);
        }

        Squares(st, grads);
    }

    /// <summary>
    /// The step's updates into <paramref name="st"/>; with <paramref name="maxGradNorm"/>, after the clip coefficient
    /// from the sums of squares of every gradient, which must have been recorded before (<see cref="RecordSquares"/>).
    /// </summary>
    internal void RecordUpdate(CommandStream st, IReadOnlyList<Tensor> grads, float? maxGradNorm)
    {
        CheckGradients(grads);
        CheckMaxNorm(maxGradNorm);
        Update(st, grads, maxGradNorm);
    }

    /// <summary>Every tensor's partials, then every total: two dependent rounds, not a barrier between each pair.</summary>
    private void Squares(CommandStream st, IReadOnlyList<(int Index, Tensor Gradient)> grads)
    {
        var partials = grads.Select(g => SumOfSquaresPartials(st, g.Gradient)).ToList();
        for (var k = 0; k < grads.Count; k++)
        {
            var (i, g) = grads[k];
            SumOfSquaresTotal(st, g, partials[k], Shaders.Slice(_sums, (long)i * _stride, 1));
        }
    }

    private void Update(CommandStream st, IReadOnlyList<Tensor> grads, float? maxGradNorm)
    {
        StepCount++;
        var bc1 = 1 - Math.Pow(Beta1, StepCount);
        var bc2 = 1 - Math.Pow(Beta2, StepCount);
        var local = Shaders.Local1D(_device);
        if (maxGradNorm is { } max)
        {
            st.Dispatch(_device.GetKernel(Shaders.GradNorm), (1, 1, 1), new NormPush((uint)grads.Count, (uint)_stride, max), _sums.Buffer, _clip.Buffer);
        }

        for (var i = 0; i < grads.Count; i++)
        {
            var (param, m, v) = _state[i];
            var n = param.Value.Length;
            st.Dispatch(_device.GetKernel(Shaders.AdamW, new LocalSize(local)), (Shaders.Groups1D(_device, n, local), 1, 1),
                new Push((uint)n, LearningRate, (float)Beta1, (float)(1 - Beta1), (float)Beta2, (float)(1 - Beta2), (float)Eps,
                    param.WeightDecay ? WeightDecay : 0f, (float)bc1, (float)bc2, maxGradNorm is null ? 0u : 1u),
                param.Value.Buffer, grads[i].Buffer, m.Buffer, v.Buffer, _clip.Buffer);
        }
    }

    /// <summary>One gradient per parameter, in order, each shaped as its parameter.</summary>
    private void CheckGradients(IReadOnlyList<Tensor> grads)
    {
        if (grads.Count != _state.Count)
        {
            throw new ArgumentException($"AdamW: {_state.Count} parameters but {grads.Count} gradients.", nameof(grads));
        }

        for (var i = 0; i < grads.Count; i++)
        {
            CheckGradient(i, grads[i]);
        }
    }

    private void CheckGradient(int index, Tensor grad) =>
        ShapeOps.Expect(grad, $"grads[{index}] ({_state[index].Param.Name})", "AdamW", [.. _state[index].Param.Value.Shape]);

    internal static void CheckMaxNorm(float? maxGradNorm)
    {
        if (maxGradNorm is { } mx && !(mx > 0))
        {
            throw new ArgumentOutOfRangeException(nameof(maxGradNorm), mx, "AdamW: max_grad_norm must be > 0.");
        }
    }

    /// <summary>The total gradient norm of the last clipped step (before clipping). Reads the device.</summary>
    public float LastGradNorm() => _clip.ToArray()[0];

    /// <summary>
    /// Coalesced partial sums (neighbouring invocations read neighbouring floats), then one workgroup's tree
    /// (<see cref="SumOfSquaresTotal"/>): a contiguous block per invocation, as before, made the norm 9% of an H100
    /// training step (docs/PERF.md).
    /// </summary>
    private Tensor SumOfSquaresPartials(CommandStream st, Tensor g)
    {
        Shaders.EnsureBindable("AdamW", g);
        var n = (uint)g.Length;
        var parts = Parts(n);
        var partial = st.Own(Tensor.Empty(_device, "grad_sq_part", (int)parts));
        var local = Shaders.PowerOfTwoLocal(_device);
        st.Dispatch(_device.GetKernel(Shaders.SumSquares, new SumSquaresSpec(local, SumSquaresMode.Partials)), (Shaders.Groups1D(_device, parts, local), 1, 1), new SumPush(n, parts),
            g.Buffer, partial.Buffer);
        return partial;
    }

    private void SumOfSquaresTotal(CommandStream st, Tensor g, Tensor partial, BufferBinding destination)
    {
        var n = (uint)g.Length;
        st.Dispatch(_device.GetKernel(Shaders.SumSquares, new SumSquaresSpec(Shaders.PowerOfTwoLocal(_device), SumSquaresMode.Total)), (1, 1, 1),
            new SumPush(n, Parts(n)), partial.Buffer, destination);
    }

    /// <summary>Enough partials to fill a GPU; on a CPU driver few, so that the final tree is short.</summary>
    private uint Parts(uint n) => Math.Min(n, _device.Info.IsCpu ? 1024u : 65536u);

    public void Dispose()
    {
        foreach (var (_, m, v) in _state)
        {
            m.Dispose();
            v.Dispose();
        }

        _clip?.Dispose();
        _sums?.Dispose();
    }
}
