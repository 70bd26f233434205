namespace Mamba2.Model.Tensors;

/// <summary>
/// What a <see cref="Tensor"/>'s elements are stored as. Ops take fp32 unless their documentation says otherwise;
/// bf16 tensors (the upper half of an fp32, rounded to nearest even) halve the memory of the activations that the
/// <c>bf16</c> precision mode reads and writes.
/// </summary>
public enum TensorDType
{
    F32,
    BF16,
}

/// <summary>Sizes and names of <see cref="TensorDType"/>.</summary>
public static class TensorDTypes
{
    /// <summary>Bytes per element.</summary>
    public static int Bytes(this TensorDType dtype) => dtype == TensorDType.BF16 ? 2 : 4;

    /// <summary>The name PyTorch and safetensors use ("float32", "bfloat16").</summary>
    public static string Name(this TensorDType dtype) => dtype == TensorDType.BF16 ? "bfloat16" : "float32";
}
