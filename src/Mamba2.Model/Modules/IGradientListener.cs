using Mamba2.Model.Tensors;
using Mamba2.Vulkan;

namespace Mamba2.Model.Modules;

/// <summary>
/// Told of a staged backward's gradients as they are formed (<see cref="Mamba2LM.Backward(Mamba2LM.Activations, IGradientListener)"/>):
/// what data parallelism needs to start summing a layer's gradients while the device works on the layers below.
/// </summary>
public interface IGradientListener
{
    /// <summary>
    /// Stage <paramref name="stage"/> (0: norm_f with the last layer, then the layers down, then the embedding) formed
    /// <paramref name="gradients"/> in <paramref name="stream"/>; work recorded into it runs after them.
    /// </summary>
    void Recorded(int stage, IReadOnlyList<(string Name, Tensor Gradient)> gradients, CommandStream stream);

    /// <summary>The device has finished stage <paramref name="stage"/>: what it wrote can be read. Called in stage order.</summary>
    void Completed(int stage);
}
