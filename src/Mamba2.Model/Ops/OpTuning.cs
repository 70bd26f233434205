using System.Runtime.CompilerServices;
using Mamba2.Model.Ops.Ssd;
using Mamba2.Vulkan;

namespace Mamba2.Model.Ops;

/// <summary>
/// Overrides of the choices ops make per device (paths, tiles, kernels): one object per device, read from the
/// environment once, the first time an op asks (<see cref="Of"/>). Ops never read the environment themselves; tests
/// and tools change it with <see cref="Override"/>.
/// </summary>
public sealed record OpTuning
{
    private static readonly ConditionalWeakTable<GpuDevice, OpTuning> PerDevice = new();

    /// <summary>MAMBA2_SSD_PATH: the SSD's scans (Auto: recurrent on CPU devices, tiled on GPUs).</summary>
    public SsdPath SsdPath { get; init; } = SsdPath.Auto;

    /// <summary>MAMBA2_SSD_SCAN_TILE: "BM,BN,BK,NK,HB" of chunk_scan, forward and backward dx (checked when used).</summary>
    public string? ScanTile { get; init; }

    /// <summary>MAMBA2_SSD_DBC_TILE: "BM,BN,BK,PK,HW" of the backward's dB/dC kernel.</summary>
    public string? DbcTile { get; init; }

    /// <summary>MAMBA2_SSD_BIDIR_TILE: "BM,BN,BK,NK,HB" of the fused bidirectional output pass.</summary>
    public string? BidirTile { get; init; }

    /// <summary>
    /// MAMBA2_SSD_TC_TILE: "BM,BN,BK,WM,WN" of every SSD tensor-core kernel, or "family=BM,BN,BK,WM,WN;..." for some of
    /// their families (scan, state, dbc: <see cref="SsdTensorCoreTiles"/>); fp32-fast and bf16, checked when used.
    /// </summary>
    public string? TensorCoreTile { get; init; }

    /// <summary>MAMBA2_GEMM_KERNEL: the fp32 GEMM kernel (null: lanes on CPU devices, shared elsewhere).</summary>
    public GemmKernel? GemmKernel { get; init; }

    /// <summary>Tests: a smaller storage-buffer binding than the device's, so that ops split their batches.</summary>
    public ulong? MaxBindingBytes { get; init; }

    /// <summary>Tests: the workgroup of row-reducing kernels (the GPU-sized one on a CPU driver).</summary>
    public uint? RowLocal { get; init; }

    /// <summary>MAMBA2_GEMM_SPLIT_K: the parts a tensor-core GEMM splits K into where it may split (null: chosen per shape).</summary>
    public int? GemmSplitK { get; init; }

    /// <summary>
    /// MAMBA2_GEMM_FP32_SPLIT_K: the parts an exact fp32 GEMM splits K into (<see cref="Gemm.Fp32Splits"/>): null
    /// the default (chosen per shape on the shared-memory tiles, none on the CPU drivers' lanes kernel), 0
    /// (<c>auto</c>) chosen per shape on either kernel, else that many (1: none).
    /// </summary>
    public int? Fp32SplitK { get; init; }

    /// <summary>
    /// MAMBA2_GEMM_TC_TILE: the tile of every tensor-core GEMM where the caller leaves it to the device, in the bench
    /// tool's --tc-tile form (<see cref="TensorCoreGemm.ParseTile"/>); checked when a GEMM first uses it.
    /// </summary>
    public string? GemmTile { get; init; }

    /// <summary>MAMBA2_GEMM_API: the tensor-core GEMM's variant where a caller leaves it to the device (null: per device).</summary>
    public TensorCoreApi? GemmApi { get; init; }

    /// <summary>
    /// MAMBA2_BF16_PRODUCTS: what bf16 mode multiplies on (bf16: bf16 cooperative matrices; f16: bf16 values as
    /// scaled f16, <see cref="GemmOperands.Bf16ViaF16"/>; null or auto: bf16 where the device has it).
    /// </summary>
    public GemmOperands? Bf16Products { get; init; }

    /// <summary>The environment variable of <see cref="Bf16Products"/>.</summary>
    public const string Bf16ProductsVariable = "MAMBA2_BF16_PRODUCTS";

    /// <summary>What <paramref name="text"/> (MAMBA2_BF16_PRODUCTS) names: bf16, f16, or null for auto or nothing.</summary>
    public static GemmOperands? ParseBf16Products(string? text) => text?.Trim().ToLowerInvariant() switch
    {
        null or "" or "auto" => null,
        "bf16" => GemmOperands.Bf16,
        "f16" => GemmOperands.Bf16ViaF16,
        var other => throw new ArgumentException($"{Bf16ProductsVariable}={other}: expected bf16, f16 or auto."),
    };

    /// <summary>MAMBA2_RMSNORM_BWD: the RMSNorm backward's form (null: <see cref="NormBackwardForm.Default"/>).</summary>
    public NormBackwardForm? NormBackward { get; init; }

    /// <summary>The environment's overrides, each checked here so a typo fails at the first op, naming the variable.</summary>
    public static OpTuning FromEnvironment()
    {
        static string? Read(string name) => Environment.GetEnvironmentVariable(name) is { Length: > 0 } v ? v.Trim() : null;
        return new OpTuning
        {
            SsdPath = Read(SsdPaths.EnvironmentVariable)?.ToLowerInvariant() switch
            {
                null or "auto" => SsdPath.Auto,
                "tiled" => SsdPath.Tiled,
                "recurrent" => SsdPath.Recurrent,
                var other => throw new ArgumentException($"{SsdPaths.EnvironmentVariable}={other}: expected tiled, recurrent or auto."),
            },
            ScanTile = Read("MAMBA2_SSD_SCAN_TILE"),
            DbcTile = Read("MAMBA2_SSD_DBC_TILE"),
            BidirTile = Read("MAMBA2_SSD_BIDIR_TILE"),
            TensorCoreTile = Read(SsdTensorCoreTiles.EnvironmentVariable),
            GemmSplitK = Read(TensorCoreGemm.SplitKVariable) switch
            {
                null => null,
                var v when int.TryParse(v, out var parts) && parts is >= 1 and <= 64 => parts,
                var v => throw new ArgumentException($"{TensorCoreGemm.SplitKVariable}={v}: expected a whole number of parts from 1 to 64."),
            },
            Fp32SplitK = Read(Gemm.SplitKVariable)?.ToLowerInvariant() switch
            {
                null => null,
                "auto" => 0,
                var v when int.TryParse(v, out var parts) && parts is >= 1 and <= 64 => parts,
                var v => throw new ArgumentException($"{Gemm.SplitKVariable}={v}: expected auto or a whole number of parts from 1 to 64."),
            },
            GemmApi = TensorCoreGemm.ParseApi(Read(TensorCoreGemm.ApiVariable)),
            GemmTile = Read(TensorCoreGemm.TileVariable),
            Bf16Products = ParseBf16Products(Read(Bf16ProductsVariable)),
            NormBackward = Read(NormBackwardForm.EnvironmentVariable) is { } form ? NormBackwardForm.Parse(form) : null,
            HoldLogitRows = ParseLogitRows(Read(LogitRowsVariable)),
            GemmKernel = Read(Gemm.KernelVariable) switch
            {
                null => null,
                "lanes" => Ops.GemmKernel.Lanes,
                "shared" => Ops.GemmKernel.Shared,
                var v => throw new ArgumentException($"{Gemm.KernelVariable}={v}: expected shared or lanes."),
            },
        };
    }

    /// <summary>
    /// MAMBA2_CE_ROWS: whether the LM head's row pass holds a row of logits in registers where it fits (true, held)
    /// or streams every row twice (false, streamed); null or auto: <see cref="LinearCrossEntropy.HoldsRowsByDefault"/>.
    /// </summary>
    public bool? HoldLogitRows { get; init; }

    /// <summary>The environment variable of <see cref="HoldLogitRows"/>.</summary>
    public const string LogitRowsVariable = "MAMBA2_CE_ROWS";

    /// <summary>What <paramref name="text"/> (MAMBA2_CE_ROWS) names: true for held, false for streamed, null for auto or nothing.</summary>
    public static bool? ParseLogitRows(string? text) => text?.Trim().ToLowerInvariant() switch
    {
        null or "" or "auto" => null,
        "held" => true,
        "streamed" => false,
        var other => throw new ArgumentException($"{LogitRowsVariable}={other}: expected held, streamed or auto."),
    };

    /// <summary>The tuning of <paramref name="device"/>: the environment's, unless changed with <see cref="Override"/>.</summary>
    public static OpTuning Of(GpuDevice device) => PerDevice.GetValue(device, _ => FromEnvironment());

    /// <summary>Sets the tuning of <paramref name="device"/> (for the rest of its life, or until set again).</summary>
    public static void Set(GpuDevice device, OpTuning tuning) => PerDevice.AddOrUpdate(device, tuning);

    /// <summary>Changes the tuning of <paramref name="device"/> until the returned scope is disposed.</summary>
    public static IDisposable Override(GpuDevice device, Func<OpTuning, OpTuning> change)
    {
        var before = Of(device);
        PerDevice.AddOrUpdate(device, change(before));
        return new Restore(device, before);
    }

    private sealed class Restore(GpuDevice device, OpTuning before) : IDisposable
    {
        public void Dispose() => PerDevice.AddOrUpdate(device, before);
    }
}
