using Mamba2.Vulkan;

namespace Mamba2.Model.Ops.Ssd;

/// <summary>
/// Tiles of the backward's dC / dB kernel (chunk_scan_bwd_dbc) from the problem and the device's shared memory, and
/// how many heads of a group one workgroup sums (the rest are split across workgroups and summed after). BM is
/// also the row tile of its straddle partial sums, which chunk_cumsum_bwd reads back.
/// </summary>
internal readonly record struct SsdBackwardTiles(uint BM, uint BN, uint BK, uint PK, uint HeadsPerWorkgroup)
{
    /// <summary>At most this many partial dB / dC copies (memory: each is a (b, L, g, n) tensor).</summary>
    public const int MaxSplits = 8;

    /// <summary>
    /// The cap inside a bidirectional backward, which also keeps the reverse scan's chunk states: half the copies
    /// keep its memory within 10% of a causal backward's at the 370m shape (see docs/PERF.md for what it costs).
    /// </summary>
    public const int BidirectionalMaxSplits = 4;

    public static uint SharedBytes(uint bm, uint bn, uint bk, uint pk, uint hw) =>
        4 * (bm * pk + pk * (bk + 1) + bm * (bk + 1) + bk * (bn + 1) + 3 * bm + 3 * bk + hw * bm);

    /// <summary>Head splits per group: the partial copies the host sums.</summary>
    public int Splits(int headsPerGroup) => headsPerGroup / (int)HeadsPerWorkgroup;

    /// <summary>
    /// The tiles for this device and problem. MAMBA2_SSD_DBC_TILE=BM,BN,BK,PK,HW overrides them for tuning runs
    /// (checked: multiples of 16, PK &lt;= BK and dividing BN, HW dividing the heads per group, within shared memory).
    /// </summary>
    public static SsdBackwardTiles Choose(DeviceCapabilities caps, SsdShape s, int maxSplits = MaxSplits, string? dbcTile = null)
    {
        if (dbcTile is not { Length: > 0 } text)
        {
            return ChooseDefault(caps, s, maxSplits);
        }

        var v = text.Split(',').Select(uint.Parse).ToArray();
        if (v.Length != 5 || v.Take(4).Any(d => d == 0 || d % 16 != 0) || v[3] > v[2] || v[1] % v[3] != 0 || v[4] == 0 ||
            (uint)(s.Heads / s.Groups) % v[4] != 0 || SharedBytes(v[0], v[1], v[2], v[3], v[4]) > caps.MaxSharedMemoryBytes)
        {
            throw new ArgumentException($"MAMBA2_SSD_DBC_TILE={text}: expected BM,BN,BK,PK,HW with multiples of 16, PK <= BK and dividing BN, HW dividing the heads per group, within shared memory.");
        }

        return new SsdBackwardTiles(v[0], v[1], v[2], v[3], v[4]);
    }

    private static SsdBackwardTiles ChooseDefault(DeviceCapabilities caps, SsdShape s, int maxSplits)
    {
        var shared = caps.MaxSharedMemoryBytes;
        var hpg = s.Heads / s.Groups;
        // Fewest heads per workgroup that keeps the split copies within maxSplits: more workgroups in flight.
        var hw = (uint)Enumerable.Range(1, hpg).First(d => hpg % d == 0 && hpg / d <= maxSplits);
        var bm = (uint)Math.Clamp((s.Chunk + 15) / 16 * 16, 16, 64);
        var full = (uint)Math.Clamp((s.DState + 15) / 16 * 16, 16, 128);
        foreach (var bn in new[] { full, 128u, 64u, 32u, 16u }.Where(v => v <= full).Distinct())
        {
            // PK divides BN: the C . B^T product walks the d_state tile in PK slices, and a slice past the tile would
            // read shared memory nothing wrote (a 48-wide tile in slices of 32 read stale values: NaN on lavapipe).
            foreach (var (bk, pk) in new (uint, uint)[] { (32, 32), (32, 16), (16, 16) }.Where(t => bn % t.Item2 == 0))
            {
                if (SharedBytes(bm, bn, bk, pk, hw) <= shared)
                {
                    return new SsdBackwardTiles(bm, bn, bk, pk, hw);
                }
            }
        }

        throw new MissingFeatureException($"Ssd backward: {shared} bytes of shared memory are too few for the smallest dB/dC tile.");
    }
}
