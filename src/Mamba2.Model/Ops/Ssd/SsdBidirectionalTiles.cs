using Mamba2.Vulkan;

namespace Mamba2.Model.Ops.Ssd;

/// <summary>
/// Tiles of the fused bidirectional output pass (chunk_scan_bidir) from the problem and the device's shared memory.
/// Shared is 1 when one C.B^T tile serves both directions (sum form without reverse tensors).
/// </summary>
internal readonly record struct SsdBidirectionalTiles(uint BM, uint BN, uint BK, uint NK, uint HB, uint Shared)
{
    private const uint MaxAccumulators = 32;   // as chunk_scan: more spilled on the H100

    public static uint SharedBytes(uint bm, uint bn, uint bk, uint nk, uint hb, uint shared)
    {
        var kp = Math.Max(bk, bn) + 1;
        var reverseTiles = shared != 0 ? 2 : bm * nk + nk * kp;
        return 4 * (bm * nk + nk * kp + reverseTiles + bm * bk + bk * bn + hb * (4 * bm + 6 * bk));
    }

    /// <summary>MAMBA2_SSD_BIDIR_TILE=BM,BN,BK,NK,HB overrides the choice for tuning runs (checked like the default).</summary>
    public static SsdBidirectionalTiles Choose(DeviceCapabilities caps, SsdShape s, bool shared, string? bidirTile = null)
    {
        var sh = shared ? 1u : 0u;
        var limit = caps.MaxSharedMemoryBytes;
        var headsPerGroup = (uint)(s.Heads / s.Groups);
        if (bidirTile is { Length: > 0 } text)
        {
            var v = text.Split(',').Select(uint.Parse).ToArray();
            if (v.Length != 5 || v.Take(3).Any(d => d == 0 || d % 16 != 0) || v[3] == 0 || v[3] > v[2] || v[4] == 0 ||
                headsPerGroup % v[4] != 0 || SharedBytes(v[0], v[1], v[2], v[3], v[4], sh) > limit)
            {
                throw new ArgumentException($"MAMBA2_SSD_BIDIR_TILE={text}: expected BM,BN,BK,NK,HB with BM, BN, BK multiples of 16, NK <= BK, HB dividing the heads per group, within shared memory.");
            }

            return new SsdBidirectionalTiles(v[0], v[1], v[2], v[3], v[4], sh);
        }

        static uint Round16(int v, uint max) => (uint)Math.Clamp((v + 15) / 16 * 16, 16, (int)max);
        var bm = Round16(s.Chunk, 64);
        var full = Round16(s.HeadDim, 128);
        foreach (var bn in new[] { full, 128u, 64u, 32u, 16u }.Where(v => v <= full).Distinct())
        {
            var perHead = bm / 16 * (bn / 16);
            var hb = new uint[] { 4, 2, 1 }.First(v => headsPerGroup % v == 0 && v * perHead <= MaxAccumulators || v == 1);
            // Measured on the H100 (docs/PERF.md): BK 16 is fastest with one shared C.B^T tile, BK 32 with two.
            var order = shared ? new (uint, uint)[] { (16, 16), (32, 16), (16, 8), (32, 8) } : [(32, 16), (16, 16), (32, 8), (16, 8)];
            foreach (var (bk, nk) in order)
            {
                if (SharedBytes(bm, bn, bk, nk, hb, sh) <= limit)
                {
                    return new SsdBidirectionalTiles(bm, bn, bk, nk, hb, sh);
                }
            }
        }

        throw new MissingFeatureException($"Ssd: {limit} bytes of shared memory are too few for the smallest bidirectional tile.");
    }
}
