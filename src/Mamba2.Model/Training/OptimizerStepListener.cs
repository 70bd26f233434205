using Mamba2.Model.Modules;
using Mamba2.Model.Tensors;
using Mamba2.Vulkan;

namespace Mamba2.Model.Training;

/// <summary>
/// An AdamW step recorded into a staged backward's last stage, once every parameter's gradient has been formed
/// (<see cref="AdamW.StepWhenFormed"/>): the host records the step while the device runs the stage before, instead
/// of after the backward with the device idle. The step is the same work, in the same order, as
/// <see cref="AdamW.Step"/> after the backward.
/// </summary>
public sealed class OptimizerStepListener : IGradientListener
{
    private readonly AdamW _optimizer;
    private readonly float? _maxGradNorm;
    private readonly Dictionary<string, Tensor> _formed = [];

    internal OptimizerStepListener(AdamW optimizer, float? maxGradNorm)
    {
        (_optimizer, _maxGradNorm) = (optimizer, maxGradNorm);
    }

    /// <summary>True once the step has been recorded (every parameter's gradient was formed).</summary>
    public bool Stepped { get; private set; }

    public void Recorded(int stage, IReadOnlyList<(string Name, Tensor Gradient)> gradients, CommandStream stream)
    {
        if (Stepped)
        {
            throw new InvalidOperationException("AdamW.StepWhenFormed: a listener steps once; ask for a new one each backward.");
        }

        foreach (var (name, gradient) in gradients)
        {
            _formed[name] = gradient;
        }

        var parameters = _optimizer.Parameters;
        if (parameters.All(p => _formed.ContainsKey(p.Name)))
        {
            _optimizer.Step([.. parameters.Select(p => _formed[p.Name])], _maxGradNorm, stream);
            Stepped = true;
        }
    }

    public void Completed(int stage)
    {
    }
}
