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

    /// <summary>
    /// Whether the tied embedding's gradient may come in two parts this step: the head's, under the embedding's name
    /// with the first stage's gradients, and the lookup's (nonzero only in the rows of the batch's tokens) through
    /// <see cref="RecordedLookup"/> with the last stage. The listener then adds the lookup's part into the gradient
    /// itself (a data-parallel sum can take the head's part early and only the touched rows at the end).
    /// </summary>
    bool TakesLookupApart => false;

    /// <summary>
    /// Stage <paramref name="stage"/> (the last) formed <paramref name="lookup"/>, the embedding lookup's part (V, d) of
    /// gradient <paramref name="name"/>, in <paramref name="stream"/>: for the listener to add into that gradient.
    /// Called only where <see cref="TakesLookupApart"/>.
    /// </summary>
    void RecordedLookup(int stage, string name, Tensor lookup, CommandStream stream) =>
        throw new NotSupportedException($"{GetType().Name} does not take the embedding lookup's gradient apart.");
}
