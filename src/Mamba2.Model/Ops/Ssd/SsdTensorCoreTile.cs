using Mamba2.Vulkan;

namespace Mamba2.Model.Ops.Ssd;

/// <summary>
/// The tile of the SSD's tensor-core kernels (tc/chunk_cb, tc/chunk_state, tc/chunk_scan; shaders/include/tc_product.glsl):
/// a BM x BN tile per workgroup of subgroups, each owning a WM x WN block of TM x TN x TK fragments (a shape the
/// device lists for the operand type with fp32 accumulation), the product's inner dimension in BK slices.
/// </summary>
internal sealed record SsdTensorCoreTile(uint BM, uint BN, uint BK, uint WM, uint WN, uint TM, uint TN, uint TK, uint Threads)
{
    private const uint MaxChunk = 256;   // the kernels' per-chunk shared arrays
    private const uint DbcHeads = 16;    // chunk_scan_bwd_dbc's E_HEADS: heads whose factors it holds at once

    public SsdTcSpec Spec => new(Threads, BM, BN, BK, WM, WN, TM, TN, TK);

    /// <summary>The workgroup tiles (BM x BN) covering a rows x columns output: a kernel's items per (batch, chunk, head or group).</summary>
    public long Tiles(long rows, long columns) => (rows + BM - 1) / BM * ((columns + BN - 1) / BN);

    public ChunkScanTcSpec ScanSpec(bool reverse, uint gShift) => new(Threads, BM, BN, BK, WM, WN, TM, TN, TK, reverse, gShift);

    public ChunkScanBwdDcbTcSpec DcbSpec(uint gShift) => new(Threads, BM, BN, BK, WM, WN, TM, TN, TK, gShift);

    public ChunkStateTcSpec StateSpec(bool grad, uint gShift) => new(Threads, BM, BN, BK, WM, WN, TM, TN, TK, grad, gShift);

    public ChunkScanBwdDbcTcSpec DbcSpec(bool reverse, uint gShift, bool stageW) =>
        new(Threads, BM, BN, BK, WM, WN, TM, TN, TK, reverse, gShift, stageW);

    /// <summary>
    /// Shared memory of the largest of the tensor-core SSD kernels: what they all hold (operand tiles, fragment
    /// staging, the slice maxima) plus the largest of their own arrays (chunk_scan's per-chunk arrays and row dots,
    /// chunk_scan_bwd_dcb's decay arrays and row and column parts, chunk_scan_bwd_dbc's decay factors and row dots).
    /// chunk_scan_bwd_dbc's W tile is left out: it holds one only where <see cref="StagesW"/>.
    /// </summary>
    public uint SharedBytes => SharedBytesWith(stageW: false);

    /// <summary>Whether chunk_scan_bwd_dbc holds its BM x BN W tile in shared memory on this device (else it reads W from memory).</summary>
    public bool StagesW(DeviceCapabilities caps) => SharedBytesWith(stageW: true) <= caps.MaxSharedMemoryBytes;

    private uint SharedBytesWith(bool stageW)
    {
        static uint Tile(uint rows, uint k) => Math.Max(rows * ((k / 4) + 2), k * ((rows / 4) + 2)) * 8;   // words of 4 operands, padded
        var subgroups = BM / WM * (BN / WN);
        var common = Tile(BM, BK) + Tile(BN, BK) + (subgroups * TM * TN * 4) + (2 * subgroups * 4);
        var scan = (3 * MaxChunk) + (BM * (BN / TN));
        var dcb = (2 * BM) + (3 * BN) + (BM * (BN / TN)) + (BN * (BM / TM));
        var dbc = (DbcHeads * BM) + (stageW ? BM * BN : 1) + (BM * (BN / TN));
        return common + (Math.Max(scan, Math.Max(dcb, dbc)) * 4);
    }

    public override string ToString() => $"{BM}x{BN}x{BK}/{WM}x{WN} frag {TM}x{TN}x{TK}";

    public const string EnvironmentVariable = "MAMBA2_SSD_TC_TILE";

    private const uint MaxBN = 64;   // see Choose

    /// <summary>
    /// The tile for operands of this type on a device: <paramref name="forced"/> ("BM,BN,BK,WM,WN", checked) or 2 x 4
    /// subgroups of 2 x 1 fragments (16x16x16 where listed: 64 x 64 x 32); null when the device lists no shape for these operands
    /// or the default tile breaks its limits.
    /// </summary>
    public static SsdTensorCoreTile? Choose(DeviceCapabilities caps, bool bf16, string? forced = null)
    {
        var shape = TensorCoreGemm.KhrShape(caps, bf16 ? GemmOperands.Bf16 : GemmOperands.F16);
        if (shape is null)
        {
            return null;
        }

        SsdTensorCoreTile tile;
        if (forced is not null)
        {
            var v = forced.Split(',').Select(x => uint.TryParse(x, out var u) ? u : 0).ToArray();
            if (v.Length != 5 || v.Any(x => x == 0))
            {
                throw new ArgumentException($"{EnvironmentVariable}={forced}: expected BM,BN,BK,WM,WN (positive integers).");
            }

            if (v[1] > MaxBN)
            {
                throw new ArgumentException(
                    $"{EnvironmentVariable}={forced}: BN {v[1]} is above {MaxBN}; wider tiles gave wrong dt gradients (the backward's row dots) on an NVIDIA H200 (docs/PERF.md), so they are refused until that is understood.");
            }

            tile = new SsdTensorCoreTile(v[0], v[1], v[2], v[3], v[4], shape.M, shape.N, shape.K, v[0] / v[3] * (v[1] / v[4]) * caps.SubgroupSize);
            if (!tile.Fits(caps))
            {
                throw new ArgumentException(
                    $"{EnvironmentVariable}={forced}: tile {tile} breaks the rules (BM % WM, BN % WN, WM % TM, WN % TN, BK % TK all 0; BM, BN, BK multiples of 4) or this device's limits ({caps.MaxSharedMemoryBytes} bytes of shared memory, {caps.MaxWorkgroupInvocations} invocations).");
            }

            return tile;
        }

        // 2 x 4 subgroups of 2 x 1 fragments: the fastest of a sweep on the H200 (docs/PERF.md); more invocations
        // per workgroup hide more of each slice's load latency than larger blocks per subgroup.
        var (wm, wn) = (2 * shape.M, shape.N);
        var bk = shape.K * Math.Max(1, 32 / shape.K);
        tile = new SsdTensorCoreTile(2 * wm, 4 * wn, bk, wm, wn, shape.M, shape.N, shape.K, 8 * caps.SubgroupSize);
        return tile.Fits(caps) ? tile : null;
    }

    private bool Fits(DeviceCapabilities caps) =>
        BM % WM == 0 && BN % WN == 0 && WM % TM == 0 && WN % TN == 0 && BK % TK == 0 && BM % 4 == 0 && BN % 4 == 0 && BK % 4 == 0
        && Threads > 0 && Threads <= Math.Min(caps.MaxWorkgroupInvocations, caps.MaxWorkgroupSize.X) && SharedBytes <= caps.MaxSharedMemoryBytes;
}
