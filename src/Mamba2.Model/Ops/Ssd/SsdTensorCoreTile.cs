using Mamba2.Vulkan;

namespace Mamba2.Model.Ops.Ssd;

/// <summary>
/// The tile of the SSD's tensor-core kernels (tc/chunk_cb, tc/chunk_state, tc/chunk_scan; shaders/include/tc_product.glsl):
/// a BM x BN tile per workgroup of subgroups, each owning a WM x WN block of TM x TN x TK fragments (a shape the
/// device lists for the operand type with fp32 accumulation), the product's inner dimension in BK slices. Each
/// family of kernels has its own (<see cref="SsdTensorCoreTiles"/>).
/// </summary>
internal sealed record SsdTensorCoreTile(uint BM, uint BN, uint BK, uint WM, uint WN, uint TM, uint TN, uint TK, uint Threads)
{
    private const uint MaxChunk = 256;   // the kernels' per-chunk shared arrays
    private const uint DbcHeads = 16;    // chunk_scan_bwd_dbc's E_HEADS: heads whose factors it holds at once

    public SsdTcSpec Spec => new(Threads, BM, BN, BK, WM, WN, TM, TN, TK);

    /// <summary>The workgroup tiles (BM x BN) covering a rows x columns output: a kernel's items per (batch, chunk, head or group).</summary>
    public long Tiles(long rows, long columns) => (rows + BM - 1) / BM * ((columns + BN - 1) / BN);

    public ChunkScanTcSpec ScanSpec(bool reverse, uint gShift, bool accumulate = false, bool shift = false, bool gated = false) =>
        new(Threads, BM, BN, BK, WM, WN, TM, TN, TK, reverse, gShift, accumulate, shift, gated);

    public ChunkScanBwdDcbTcSpec DcbSpec(uint gShift, uint splits) => new(Threads, BM, BN, BK, WM, WN, TM, TN, TK, gShift, splits);

    public ChunkStateTcSpec StateSpec(bool grad, uint gShift) => new(Threads, BM, BN, BK, WM, WN, TM, TN, TK, grad, gShift);

    public ChunkScanBwdDbcTcSpec DbcSpec(bool reverse, uint gShift) => new(Threads, BM, BN, BK, WM, WN, TM, TN, TK, reverse, gShift);

    /// <summary>
    /// Shared memory of the largest of the tensor-core SSD kernels: what they all hold (operand tiles, fragment
    /// staging, the slice maxima) plus the largest of their own arrays (chunk_scan's per-chunk arrays and row dots,
    /// chunk_scan_bwd_dcb's decay arrays and row and column parts, chunk_scan_bwd_dbc's decay factors and row dots).
    /// </summary>
    public uint SharedBytes
    {
        get
        {
            var subgroups = BM / WM * (BN / WN);
            var common = Math.Max(OperandTileBytes, StagingBytes) + (2 * subgroups * 4);   // tiles and staging share
            var scan = (3 * MaxChunk) + (BM * (BN / TN));
            var dcb = (2 * BM) + (3 * BN) + (BM * (BN / TN)) + (BN * (BM / TM));
            var dbc = (DbcHeads * BM) + (BM * (BN / TN));
            return common + (Math.Max(scan, Math.Max(dcb, dbc)) * 4);
        }
    }

    /// <summary>Bytes of the shared A and B slices (words of 4 operands, padded rows, room for either layout).</summary>
    internal uint OperandTileBytes => Tile(BM, BK) + Tile(BN, BK);

    /// <summary>Bytes of the epilogue's fragment staging, one fp32 fragment a subgroup (in the operand tiles' memory).</summary>
    internal uint StagingBytes => BM / WM * (BN / WN) * TM * TN * 4;

    private static uint Tile(uint rows, uint k) => Math.Max(rows * ((k / 4) + 2), k * ((rows / 4) + 2)) * 8;

    public override string ToString() => $"{BM}x{BN}x{BK}/{WM}x{WN} frag {TM}x{TN}x{TK}";

    /// <summary>The same tile <paramref name="bn"/> wide on subgroups <paramref name="wn"/> wide (more of them, or wider blocks).</summary>
    public SsdTensorCoreTile Widened(uint bn, uint wn, uint subgroupSize) => this with { BN = bn, WN = wn, Threads = BM / WM * (bn / wn) * subgroupSize };

    /// <summary>
    /// The default tile for operands of this type on a device: 2 x 4 subgroups of 2 x 1 fragments (16x16x16 where
    /// listed: 64 x 64 x 32); null when the device lists no shape for these operands or the tile breaks its limits.
    /// </summary>
    public static SsdTensorCoreTile? Default(DeviceCapabilities caps, bool bf16)
    {
        if (FragmentShape(caps, bf16) is not { } shape)
        {
            return null;
        }

        // The fastest of a sweep on the H200 (docs/PERF.md); more invocations per workgroup hide more of each
        // slice's load latency than larger blocks per subgroup.
        var (wm, wn) = (2 * shape.M, shape.N);
        var bk = shape.K * Math.Max(1, 32 / shape.K);
        var tile = new SsdTensorCoreTile(2 * wm, 4 * wn, bk, wm, wn, shape.M, shape.N, shape.K, 8 * caps.SubgroupSize);
        return tile.Fits(caps) ? tile : null;
    }

    /// <summary>
    /// A tile written "BM,BN,BK,WM,WN" (<paramref name="what"/> names where it came from in messages), checked against the
    /// kernels' rules and this device's limits; null when the device lists no shape for these operands.
    /// </summary>
    public static SsdTensorCoreTile? Parse(DeviceCapabilities caps, bool bf16, string text, string what)
    {
        if (FragmentShape(caps, bf16) is not { } shape)
        {
            return null;
        }

        var v = text.Split(',').Select(x => uint.TryParse(x.Trim(), out var u) ? u : 0).ToArray();
        if (v.Length != 5 || v.Any(x => x == 0) || v[0] % v[3] != 0 || v[1] % v[4] != 0)
        {
            throw new ArgumentException($"{what}: expected BM,BN,BK,WM,WN (positive integers, BM a multiple of WM and BN of WN).");
        }

        var tile = new SsdTensorCoreTile(v[0], v[1], v[2], v[3], v[4], shape.M, shape.N, shape.K, v[0] / v[3] * (v[1] / v[4]) * caps.SubgroupSize);
        if (!tile.Fits(caps))
        {
            throw new ArgumentException(
                $"{what}: tile {tile} breaks the rules (WM % TM, WN % TN, BK % TK all 0; BM, BN, BK multiples of 4) or this device's limits ({caps.MaxSharedMemoryBytes} bytes of shared memory, {caps.MaxWorkgroupInvocationsX} invocations).");
        }

        return tile;
    }

    private static CooperativeMatrixShape? FragmentShape(DeviceCapabilities caps, bool bf16) =>
        TensorCoreGemm.KhrShape(caps, bf16 ? GemmOperands.Bf16 : GemmOperands.F16);

    internal bool Fits(DeviceCapabilities caps) =>
        BM % WM == 0 && BN % WN == 0 && WM % TM == 0 && WN % TN == 0 && BK % TK == 0 && BM % 4 == 0 && BN % 4 == 0 && BK % 4 == 0
        && Threads > 0 && Threads <= caps.MaxWorkgroupInvocationsX && SharedBytes <= caps.MaxSharedMemoryBytes;
}
