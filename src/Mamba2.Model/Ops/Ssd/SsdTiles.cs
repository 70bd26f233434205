using Mamba2.Vulkan;

namespace Mamba2.Model.Ops.Ssd;

/// <summary>
/// Tile sizes for chunk_state and chunk_scan, from the problem and the device's shared-memory limit (48 KiB on
/// NVIDIA, 32 KiB on lavapipe): never a fixed constant.
/// </summary>
internal readonly record struct SsdTiles(
    uint StateBM, uint StateBN, uint StateBK, uint ScanBM, uint ScanBN, uint ScanBK, uint ScanNK, uint ScanHeads)
{
    /// <summary>At most this many accumulators per invocation across a chunk_scan head block (registers).</summary>
    private const uint MaxAccumulators = 32;   // 64 spilled on the H100 (chunk_scan 3x slower; docs/PERF.md)

    public static uint ScanSharedBytes(uint bm, uint bn, uint bk, uint nk, uint hb) =>
        4 * (bm * nk + nk * (Math.Max(bk, bn) + 1) + bm * bk + bk * bn + hb * (2 * bm + 3 * bk));

    public static uint StateSharedBytes(uint bm, uint bn, uint bk) => 4 * bk * (bm + bn);

    /// <summary>
    /// The tiles for this device and problem. MAMBA2_SSD_SCAN_TILE=BM,BN,BK,NK,HB overrides chunk_scan's tile for
    /// tuning runs (checked against the shared-memory limit; HB must divide the heads per group).
    /// </summary>
    public static SsdTiles Choose(DeviceCapabilities caps, SsdShape s, string? scanTile = null)
    {
        var chosen = ChooseDefault(caps, s);
        if (scanTile is not { Length: > 0 } text)
        {
            return chosen;
        }

        var v = text.Split(',').Select(uint.Parse).ToArray();
        if (v.Length != 5 || v[0] % 16 != 0 || v[1] % 16 != 0 || v[2] % 16 != 0 || (uint)(s.Heads / s.Groups) % v[4] != 0 ||
            ScanSharedBytes(v[0], v[1], v[2], v[3], v[4]) > caps.MaxSharedMemoryBytes)
        {
            throw new ArgumentException($"MAMBA2_SSD_SCAN_TILE={text}: expected BM,BN,BK,NK,HB with BM, BN, BK multiples of 16, HB dividing the heads per group, within shared memory.");
        }

        return chosen with { ScanBM = v[0], ScanBN = v[1], ScanBK = v[2], ScanNK = v[3], ScanHeads = v[4] };
    }

    private static SsdTiles ChooseDefault(DeviceCapabilities caps, SsdShape s)
    {
        static uint Round16(int v, uint max) => (uint)Math.Clamp((v + 15) / 16 * 16, 16, (int)max);
        var shared = caps.MaxSharedMemoryBytes;

        var stateBM = Round16(s.HeadDim, 64);
        const uint stateBK = 32;
        var stateBN = Shrinking(Round16(s.DState, 128)).First(bn => StateSharedBytes(stateBM, bn, stateBK) <= shared || bn == 16);

        var scanBM = Round16(s.Chunk, 64);
        var scanBN = Round16(s.HeadDim, 128);
        var headsPerGroup = (uint)(s.Heads / s.Groups);
        // A full-width p tile first: a narrower one recomputes C.B^T once per extra tile.
        foreach (var bn in Shrinking(scanBN))
        {
            // Heads per workgroup share each C.B^T tile: as many as divide the group and fit the registers.
            var perHead = scanBM / 16 * (bn / 16);
            var hb = new uint[] { 4, 2, 1 }.First(v => headsPerGroup % v == 0 && v * perHead <= MaxAccumulators || v == 1);
            // BK 16 first: 3.37 ms against 3.86 for 32,32 at the 370m shape on the H100 (docs/PERF.md).
            foreach (var (bk, nk) in new (uint, uint)[] { (16, 16), (32, 32), (32, 16), (16, 8) })
            {
                if (ScanSharedBytes(scanBM, bn, bk, nk, hb) <= shared)
                {
                    return new SsdTiles(stateBM, stateBN, stateBK, scanBM, bn, bk, nk, hb);
                }
            }
        }

        throw new MissingFeatureException($"Ssd: {caps.MaxSharedMemoryBytes} bytes of shared memory are too few for the smallest chunk_scan tile.");
    }

    /// <summary>A tile width, then the smaller multiples of 16 worth trying (powers of two).</summary>
    private static IEnumerable<uint> Shrinking(uint start) =>
        new[] { start, 128u, 64u, 32u, 16u }.Where(v => v <= start).Distinct();
}
