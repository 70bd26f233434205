using Mamba2.Model.Modules;
using Mamba2.Model.Tensors;
using Mamba2.Vulkan;

namespace Mamba2.Model.Training;

/// <summary>
/// An AdamW step recorded into a staged backward's last stage, once every parameter's gradient has been formed
/// (<see cref="AdamW.StepWhenFormed"/>): the host records the step while the device runs the stage before, instead
/// of after the backward with the device idle. With clipping, each gradient's sum of squares is recorded into the
/// stage that forms it, so the last stage records only the norm and the updates. The step is the same work on the
/// same values as <see cref="AdamW.Step"/> after the backward (bit for bit).
/// </summary>
public sealed class OptimizerStepListener : IGradientListener
{
    private readonly AdamW _optimizer;
    private readonly float? _maxGradNorm;
    private readonly Dictionary<string, int> _index;
    private readonly Tensor?[] _formed;
    private int _count;

    internal OptimizerStepListener(AdamW optimizer, float? maxGradNorm)
    {
        AdamW.CheckMaxNorm(maxGradNorm);
        (_optimizer, _maxGradNorm) = (optimizer, maxGradNorm);
        var parameters = optimizer.Parameters;
        _index = parameters.Select((p, i) => (p.Name, i)).ToDictionary(q => q.Name, q => q.i);
        _formed = new Tensor?[parameters.Count];
    }

    /// <summary>True once the step has been recorded (every parameter's gradient was formed).</summary>
    public bool Stepped { get; private set; }

    public void Recorded(int stage, IReadOnlyList<(string Name, Tensor Gradient)> gradients, CommandStream stream)
    {
        if (Stepped)
        {
            throw new InvalidOperationException("AdamW.StepWhenFormed: a listener steps once; ask for a new one each backward.");
        }

        var ours = new List<(int Index, Tensor Gradient)>();
        foreach (var (name, gradient) in gradients)
        {
            if (_index.TryGetValue(name, out var i))
            {
                _count += _formed[i] is null ? 1 : 0;
                _formed[i] = gradient;
                ours.Add((i, gradient));
            }
        }

        if (_maxGradNorm is not null && ours.Count > 0)
        {
            _optimizer.RecordSquares(stream, ours);
        }

        if (_count == _formed.Length)
        {
            _optimizer.RecordUpdate(stream, _formed!, _maxGradNorm);
            Stepped = true;
        }
    }

    public void Completed(int stage)
    {
    }
}
