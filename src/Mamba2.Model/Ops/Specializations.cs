using Mamba2.Vulkan;

namespace Mamba2.Model.Ops;

// Each kernel's specialization constants, named as in its GLSL (constant_id order; Local is local_size_x_id).
// SpecializationTests compares these parameter names with the shaders' declarations.
#pragma warning disable SA1649, SA1402 // one file for the family: each record is two lines

internal readonly record struct GemmSpec(uint Local, uint BM, uint BN, uint BK, uint TM, uint TN, bool TransA, bool TransB) : ISpecialization
{
    public uint[] Constants() => [Local, BM, BN, BK, TM, TN, TransA ? 1u : 0u, TransB ? 1u : 0u];
}

internal readonly record struct GemmLanesSpec(uint Local, uint RG, uint TN, bool TransA, bool TransB) : ISpecialization
{
    public uint[] Constants() => [Local, RG, TN, TransA ? 1u : 0u, TransB ? 1u : 0u];
}

internal readonly record struct GemmCoopmatSpec(uint Local, uint BM, uint BN, uint BK, uint WM, uint WN, uint TM, uint TN, uint TK, bool TransA, bool TransB)
    : ISpecialization
{
    public uint[] Constants() => [Local, BM, BN, BK, WM, WN, TM, TN, TK, TransA ? 1u : 0u, TransB ? 1u : 0u];
}

internal readonly record struct ModeSpec(uint Local, uint Mode) : ISpecialization
{
    public uint[] Constants() => [Local, Mode];
}

internal readonly record struct ElementwiseSpec(uint Local, uint Op) : ISpecialization
{
    public uint[] Constants() => [Local, Op];
}

internal readonly record struct Conv1dSpec(uint Local, uint K, bool Silu) : ISpecialization
{
    public uint[] Constants() => [Local, K, Silu ? 1u : 0u];
}

internal readonly record struct Conv1dBwdSpec(uint Local, uint K, bool Silu, uint Mode) : ISpecialization
{
    public uint[] Constants() => [Local, K, Silu ? 1u : 0u, Mode];
}

internal readonly record struct Conv1dStepSpec(uint Local, uint K) : ISpecialization
{
    public uint[] Constants() => [Local, K];
}

internal readonly record struct ReduceSumSpec(uint Local, bool Product, bool Accumulate) : ISpecialization
{
    public uint[] Constants() => [Local, Product ? 1u : 0u, Accumulate ? 1u : 0u];
}

internal readonly record struct SeqShiftSpec(uint Local, bool Flip) : ISpecialization
{
    public uint[] Constants() => [Local, Flip ? 1u : 0u];
}

internal readonly record struct ChunkStateSpec(uint BM, uint BN, uint BK, bool Grad, uint GShift) : ISpecialization
{
    public uint[] Constants() => [BM, BN, BK, Grad ? 1u : 0u, GShift];
}

internal readonly record struct ChunkScanSpec(uint BM, uint BN, uint BK, uint NK, uint HB, bool Reverse, uint GShift) : ISpecialization
{
    public uint[] Constants() => [BM, BN, BK, NK, HB, Reverse ? 1u : 0u, GShift];
}

internal readonly record struct ChunkScanBidirSpec(uint BM, uint BN, uint BK, uint NK, uint HB, bool Shift, bool Shared) : ISpecialization
{
    public uint[] Constants() => [BM, BN, BK, NK, HB, Shift ? 1u : 0u, Shared ? 1u : 0u];
}

internal readonly record struct ChunkScanBwdDbcSpec(uint BM, uint BN, uint BK, uint PK, uint HW, bool Reverse, uint GShift) : ISpecialization
{
    public uint[] Constants() => [BM, BN, BK, PK, HW, Reverse ? 1u : 0u, GShift];
}

internal readonly record struct SsdRecurrentSpec(uint Local, uint NB, uint SG) : ISpecialization
{
    public uint[] Constants() => [Local, NB, SG];
}

internal readonly record struct SsdRecurrentBwdStateSpec(uint Local, uint PB, uint K, uint KC, uint SG) : ISpecialization
{
    public uint[] Constants() => [Local, PB, K, KC, SG];
}
