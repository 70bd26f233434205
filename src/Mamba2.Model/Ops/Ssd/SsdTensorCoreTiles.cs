using Mamba2.Vulkan;

namespace Mamba2.Model.Ops.Ssd;

/// <summary>
/// The tiles of the SSD's tensor-core kernels, one per family: Scan (chunk_cb and the backward's dx, dcb), Y (the
/// forward's chunk_scan), State (chunk_state forward and backward), Dbc (the backward's dC and dB from dcb) and Bidir
/// (the fused bidirectional forward's output pass). A
/// family whose products run over d_state as an output dimension takes a tile twice the default's width where
/// d_state is wider than the default tile: each of its workgroups then walks the heads (Dbc) or reads x (State) half
/// as often.
/// </summary>
internal sealed record SsdTensorCoreTiles(SsdTensorCoreTile Scan, SsdTensorCoreTile State, SsdTensorCoreTile Dbc, SsdTensorCoreTile Y, SsdTensorCoreTile Bidir)
{
    public const string EnvironmentVariable = "MAMBA2_SSD_TC_TILE";

    private static readonly string[] Families = ["scan", "state", "dbc", "y", "bidir"];

    /// <summary>
    /// The tiles for operands of this type and <paramref name="dstate"/> on a device; null when the device lists no
    /// shape for these operands or the default tile breaks its limits. <paramref name="forced"/> (the environment's
    /// <see cref="EnvironmentVariable"/>, checked): "BM,BN,BK,WM,WN" for every family, or "family=BM,BN,BK,WM,WN"
    /// entries separated by ';' (families scan, state, dbc, y, bidir; scan sets y and bidir too unless they follow it)
    /// for some of them.
    /// </summary>
    public static SsdTensorCoreTiles? Choose(DeviceCapabilities caps, bool bf16, int dstate, string? forced = null)
    {
        if (SsdTensorCoreTile.Default(caps, bf16) is not { } scan)
        {
            return null;
        }

        var wide = (uint)dstate > scan.BN;
        // Measured per family (docs/PERF.md): dC/dB fastest at twice the default's width, in bf16 on twice its
        // subgroups, in fp32-fast on the same subgroups each twice as tall (its per-slice scaled products hold a
        // second set of accumulators: at twice the subgroups its registers leave room for one workgroup an SM);
        // chunk_state at twice its width on wider subgroup blocks, in bf16 (fp32-fast's per-slice operand scaling
        // costs more there than it gains).
        var dbcWide = bf16 ? scan.Widened(2 * scan.BN, scan.WN, caps.SubgroupSize) : scan with { BN = 2 * scan.BN, WM = 2 * scan.WM };
        var dbc = Fitting(caps, wide ? dbcWide : null) ?? scan;
        var state = Fitting(caps, wide && bf16 ? scan.Widened(2 * scan.BN, 2 * scan.WN, caps.SubgroupSize) : null) ?? scan;
        // The forward's chunk_scan in bf16 at twice the default's height on twice its subgroups: each workgroup reads
        // a slice of x for twice the rows (in fp32-fast, and for dx and dcb, slower: docs/PERF.md).
        var y = Fitting(caps, bf16 ? scan with { BM = 2 * scan.BM, Threads = 2 * scan.Threads } : null) ?? scan;
        // The fused bidirectional pass: bf16 on y's tile; f16 operands twice as tall on the same subgroups, each twice
        // as tall (at y's tile its f16 variant holds registers for two workgroups an SM, not three: docs/PERF.md).
        var bidir = bf16 ? y : Fitting(caps, scan with { BM = 2 * scan.BM, WM = 2 * scan.WM }) ?? scan;
        var tiles = new SsdTensorCoreTiles(scan, state, dbc, y, bidir);
        return forced is null ? tiles : tiles.Forced(caps, bf16, forced);
    }

    private static SsdTensorCoreTile? Fitting(DeviceCapabilities caps, SsdTensorCoreTile? tile) => tile is not null && tile.Fits(caps) ? tile : null;

    private SsdTensorCoreTiles Forced(DeviceCapabilities caps, bool bf16, string forced)
    {
        var what = $"{EnvironmentVariable}={forced}";
        if (!forced.Contains('='))
        {
            var all = SsdTensorCoreTile.Parse(caps, bf16, forced, what)!;
            return new SsdTensorCoreTiles(all, all, all, all, all);
        }

        var tiles = this;
        foreach (var entry in forced.Split(';', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var parts = entry.Split('=', 2, StringSplitOptions.TrimEntries);
            var family = parts[0].ToLowerInvariant();
            if (parts.Length != 2 || !Families.Contains(family))
            {
                throw new ArgumentException($"{what}: expected BM,BN,BK,WM,WN or entries family=BM,BN,BK,WM,WN separated by ';' (families {string.Join(", ", Families)}); got \"{entry}\".");
            }

            var tile = SsdTensorCoreTile.Parse(caps, bf16, parts[1], what)!;
            tiles = family switch
            {
                "scan" => tiles with { Scan = tile, Y = tile, Bidir = tile },
                "state" => tiles with { State = tile },
                "y" => tiles with { Y = tile },
                "bidir" => tiles with { Bidir = tile },
                _ => tiles with { Dbc = tile },
            };
        }

        return tiles;
    }

    public override string ToString() => $"scan {Scan}, state {State}, dbc {Dbc}, y {Y}, bidir {Bidir}";
}
