using Mamba2.Vulkan;

namespace Mamba2.Model.Ops.Ssd;

/// <summary>
/// Work shapes of the recurrent kernels. The row kernels (forward, dx) hold NB state columns of one row per
/// invocation, Rows rows per workgroup; the state-gradient kernel holds PB state rows of one column per invocation,
/// Columns columns per workgroup, and keeps sub-chunk checkpoints every K steps (KC of them, covering a chunk).
/// Register blocks stay at most 32 floats: wider states walk the sequence once per block (llvmpipe keeps a private
/// array per lane in its coroutine frame, so it must stay small). SG is the subgroup size for lane-shared loads
/// (shaders/include/ssd_recurrent.glsl) where the device fixes it and it divides both workgroups, else 0.
/// </summary>
internal readonly record struct SsdRecurrentTiles(uint Rows, uint NB, uint Columns, uint PB, uint K, uint KC, uint SG)
{
    private const int MaxBlock = 32;

    /// <summary>The most state rows the state-gradient kernel holds: it keeps 2 + KC + K blocks of them.</summary>
    private const int MaxRowBlock = 16;

    /// <summary>The most checkpointed state floats (KC x PB) per invocation of the state-gradient kernel.</summary>
    private const int MaxCheckpoints = 512;

    public static SsdRecurrentTiles Choose(DeviceCapabilities caps, SsdShape s)
    {
        // Workgroups of whole subgroups (8 lanes on llvmpipe: one SIMD register), no larger than the problem.
        var sub = (int)Math.Max(1, caps.SubgroupSize);
        var limit = (int)Math.Min(64, caps.MaxWorkgroupInvocationsX);
        uint Local(int extent) => (uint)Math.Max(1, Math.Min(limit, (extent + sub - 1) / sub * sub));
        // Even blocks: n = 40 walks twice with 20 columns rather than 32 + 8.
        static uint Even(int extent, int max) => (uint)((extent + (extent + max - 1) / max - 1) / ((extent + max - 1) / max));
        // Sub-chunks as short as the checkpoints allow (KC x PB floats, MaxCheckpoints at most; at most sqrt(Q)):
        // on llvmpipe the unrolled K-step walk costs more than the checkpoint pass it saves (state kernel at b32
        // L16 h8 p32 n64 Q16: K 4 38 ms, K 2 26 ms, K 1 24 ms).
        var pb = Even(s.HeadDim, MaxRowBlock);
        var k = (uint)Math.Min(Math.Ceiling(Math.Sqrt(s.Chunk)), Math.Max(1, (s.Chunk * (int)pb + MaxCheckpoints - 1) / MaxCheckpoints));
        var (rows, columns) = (Local(s.HeadDim), Local(s.DState));
        var fixedSize = caps.MinSubgroupSize == caps.MaxSubgroupSize && caps.SubgroupSize > 1;
        var sg = fixedSize && rows % caps.SubgroupSize == 0 && columns % caps.SubgroupSize == 0 ? caps.SubgroupSize : 0u;
        return new SsdRecurrentTiles(rows, Even(s.DState, MaxBlock), columns, pb, k, (uint)((s.Chunk + k - 1) / k), sg);
    }
}
