using Mamba2.Vulkan;

namespace Mamba2.Model.Tensors;

/// <summary>What the argument checks (<see cref="ShapeOps"/>) read of anything an op takes: a tensor or a packed operand.</summary>
public interface IShapedArray
{
    GpuDevice Device { get; }

    IReadOnlyList<int> Shape { get; }

    string Name { get; }

    int Rank { get; }
}
