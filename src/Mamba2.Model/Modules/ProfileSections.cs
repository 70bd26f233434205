namespace Mamba2.Model.Modules;

/// <summary>
/// The section names the model marks on a profiling stream (<see cref="Mamba2.Vulkan.CommandStream.Section"/>): a
/// training step's GPU time splits into these, summed over layers.
/// </summary>
public static class ProfileSections
{
    /// <summary>in_proj and out_proj GEMMs (forward, and input and weight gradients), their biases.</summary>
    public const string Projections = "projections";

    /// <summary>The tied LM head's GEMMs; in a training step also its cross-entropy (<see cref="Ops.LinearCrossEntropy"/>).</summary>
    public const string LmHead = "lm_head";

    /// <summary>The SSD op, forward or backward, and its parameter-gradient copies.</summary>
    public const string Ssd = "ssd";

    public const string Conv = "conv1d";

    public const string Norm = "rmsnorm";

    /// <summary>Column splits and concatenations, residual adds, A = -exp(A_log).</summary>
    public const string Elementwise = "elementwise";

    public const string Embedding = "embedding";

    public const string Optimizer = "optimizer";
}
