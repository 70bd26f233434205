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

internal readonly record struct CopyColumnsSpec(uint Local, bool Words, bool FoldAbsMax = false) : ISpecialization
{
    public uint[] Constants() => [Local, Words ? 1u : 0u, FoldAbsMax ? 1u : 0u];
}

/// <summary>to_operand16's FORM: the 16-bit operands it writes.</summary>
internal enum Operand16Form : uint
{
    F16 = 0,
    Bf16 = 1,
    Bf16ViaF16 = 2,   // rounded to bf16, then scaled into f16
}

internal readonly record struct ToOperand16Spec(uint Local, Operand16Form Form) : ISpecialization
{
    public uint[] Constants() => [Local, (uint)Form];
}

internal readonly record struct GemmCoopmatSpec(uint Local, uint BM, uint BN, uint BK, uint WM, uint WN, uint TM, uint TN, uint TK, bool TransA, bool TransB,
    uint Buffers)
    : ISpecialization
{
    public uint[] Constants() => [Local, BM, BN, BK, WM, WN, TM, TN, TK, TransA ? 1u : 0u, TransB ? 1u : 0u, Buffers];
}

/// <summary>cross_entropy's passes (the shader's MODE).</summary>
internal enum CrossEntropyMode : uint
{
    RowPairs = 0,   // per row: (loss, counted) and lse
    Loss = 1,       // loss = sum / count from the pairs' sums
    Gradient = 2,   // dlogits
}

internal readonly record struct CrossEntropySpec(uint Local, CrossEntropyMode Mode) : ISpecialization
{
    public uint[] Constants() => [Local, (uint)Mode];
}

/// <summary>What cross_entropy_rows writes of the logits' gradient (the shader's GRADIENT).</summary>
internal enum CrossEntropyRowsGradient : uint
{
    None = 0,
    Fp32InPlace = 1,
    F16 = 2,   // scaled by 2^14: |softmax - onehot| <= 1
    Bf16 = 3,
    Bf16ViaF16 = 4,   // rounded to bf16, then as F16
}

/// <summary>
/// cross_entropy_rows: with <paramref name="Quads"/> (vocabulary a multiple of 4) logits move four at a time; with
/// <paramref name="Held"/> above 0 (and Quads) each invocation keeps that many of a row's logits in registers.
/// </summary>
internal readonly record struct CrossEntropyRowsSpec(uint Local, CrossEntropyRowsGradient Gradient, bool ArgMax, bool Quads = false, uint Held = 0)
    : ISpecialization
{
    public uint[] Constants() => [Local, (uint)Gradient, ArgMax ? 1u : 0u, Quads ? 1u : 0u, Held];
}

/// <summary>embedding's directions (MODE).</summary>
internal enum EmbeddingMode : uint
{
    Lookup = 0,
    TableGradient = 1,
}

/// <summary>
/// nn/embedding: with <paramref name="Plus"/> the table gradient adds a tensor of its shape (MODE 1); with
/// <paramref name="Quads"/> (d a multiple of 4) an invocation moves four neighbours.
/// </summary>
internal readonly record struct EmbeddingSpec(uint Local, EmbeddingMode Mode, bool Plus = false, bool Quads = false) : ISpecialization
{
    public uint[] Constants() => [Local, (uint)Mode, Plus ? 1u : 0u, Quads ? 1u : 0u];
}

/// <summary>rmsnorm_bwd's passes (MODE).</summary>
internal enum RmsNormBwdMode : uint
{
    InputGradients = 0,   // dx and dz per (row, group)
    WeightPartials = 1,   // partial sums of dw per block of rows
    Fused = 2,            // both, per (block of rows, group)
}

/// <summary>
/// nn/rmsnorm_bwd for one <paramref name="Form"/>: with <paramref name="Quads"/> an invocation moves runs of four
/// neighbours (MODE 0 and 2); with <paramref name="DxCopy"/> (the OUT_BF16 variant, no gate) dx's bf16 copy is stored too.
/// </summary>
internal readonly record struct RmsNormBwdSpec(uint Local, RmsNormBwdMode Mode, uint Per, bool Quads = false, RmsNormBwdFold Fold = RmsNormBwdFold.None,
    bool DxCopy = false, RmsNormForm Form = RmsNormForm.Plain) : ISpecialization
{
    public uint[] Constants() => [Local, (uint)Mode, Per, Quads ? 1u : 0u, (uint)Fold, DxCopy ? 1u : 0u, (uint)Form];
}

/// <summary>rmsnorm_bwd's FOLD: which output's largest |v| goes into an f16 operand's scale word.</summary>
internal enum RmsNormBwdFold : uint
{
    None,
    Dz,
    Dx,
}

/// <summary>nn/convert: the workgroup size and the direction (fp32 to bf16, or back).</summary>
internal readonly record struct ConvertSpec(uint Local, bool ToBf16) : ISpecialization
{
    public uint[] Constants() => [Local, ToBf16 ? 1u : 0u];
}

/// <summary>nn/rmsnorm's y (PACK): fp32, or packed tensor-core operands (the f16 forms scaled by a bound on |y|).</summary>
internal enum RmsNormPack : uint
{
    None = 0,
    Bf16 = 1,
    F16Bound = 2,
    Bf16ViaF16Bound = 3,
}

/// <summary>
/// The norm's form, both passes' FORM constant: gated (z given), the gate after the norm, and the residual stream's
/// term (the forward reads x + res and writes the sum; the backward adds res's gradient to dx).
/// </summary>
[Flags]
internal enum RmsNormForm : uint
{
    Plain = 0,
    Gated = 1,
    GateAfterNorm = 2,
    Residual = 4,
}

/// <summary>
/// nn/rmsnorm for one <paramref name="Form"/>: y packed as <paramref name="Pack"/> says; with <paramref name="Quads"/> an
/// invocation moves runs of four neighbours.
/// </summary>
internal readonly record struct RmsNormSpec(uint Local, uint Per, RmsNormPack Pack = RmsNormPack.None, bool Quads = false, bool FoldAbsMax = false,
    RmsNormForm Form = RmsNormForm.Plain) : ISpecialization
{
    public uint[] Constants() => [Local, Per, (uint)Pack, Quads ? 1u : 0u, FoldAbsMax ? 1u : 0u, (uint)Form];
}

/// <summary>sum_squares' passes (MODE).</summary>
internal enum SumSquaresMode : uint
{
    Partials = 0,
    Total = 1,
}

internal readonly record struct SumSquaresSpec(uint Local, SumSquaresMode Mode) : ISpecialization
{
    public uint[] Constants() => [Local, (uint)Mode];
}

/// <summary>conv1d_bwd's passes (MODE).</summary>
internal readonly record struct ElementwiseSpec(uint Local, uint Op) : ISpecialization
{
    public uint[] Constants() => [Local, Op];
}

internal readonly record struct Conv1dSpec(uint Local, uint K, bool Silu) : ISpecialization
{
    public uint[] Constants() => [Local, K, Silu ? 1u : 0u];
}

internal readonly record struct Conv1dBwdSpec(uint Local, uint K, bool Silu, bool FoldAbsMax = false) : ISpecialization
{
    public uint[] Constants() => [Local, K, Silu ? 1u : 0u, FoldAbsMax ? 1u : 0u];
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

/// <summary>tc/chunk_cb: a tile of cooperative-matrix fragments (shaders/include/tc_product.glsl).</summary>
internal readonly record struct SsdTcSpec(uint Local, uint BM, uint BN, uint BK, uint WM, uint WN, uint TM, uint TN, uint TK) : ISpecialization
{
    public uint[] Constants() => [Local, BM, BN, BK, WM, WN, TM, TN, TK];
}

internal readonly record struct ChunkStateTcSpec(uint Local, uint BM, uint BN, uint BK, uint WM, uint WN, uint TM, uint TN, uint TK, bool Grad, uint GShift)
    : ISpecialization
{
    public uint[] Constants() => [Local, BM, BN, BK, WM, WN, TM, TN, TK, Grad ? 1u : 0u, GShift];
}

/// <summary>
/// tc/chunk_scan: the tile (<see cref="SsdTcSpec"/>), run backwards (the backward's dx), g read one step away (0 none,
/// 1: +1, 2: -1), dx added to what it holds (a constant, so that the plain dx compiles without that read), in the
/// bidirectional variant Hydra's shift form, and the forward's gate (a constant, so that the ungated forward holds none).
/// </summary>
internal readonly record struct ChunkScanTcSpec(uint Local, uint BM, uint BN, uint BK, uint WM, uint WN, uint TM, uint TN, uint TK, bool Reverse, uint GShift,
    bool Accumulate = false, bool Shift = false, bool Gated = false)
    : ISpecialization
{
    public uint[] Constants() => [Local, BM, BN, BK, WM, WN, TM, TN, TK, Reverse ? 1u : 0u, GShift, Accumulate ? 1u : 0u, Shift ? 1u : 0u, Gated ? 1u : 0u];
}

/// <summary>
/// tc/chunk_scan_bwd_dcb: the tile (<see cref="SsdTcSpec"/>), g read one step away (0 none, 1: +1, 2: -1), and the
/// workgroups that share each tile's heads (each writes a partial dcb of its own).
/// </summary>
internal readonly record struct ChunkScanBwdDcbTcSpec(uint Local, uint BM, uint BN, uint BK, uint WM, uint WN, uint TM, uint TN, uint TK, uint GShift,
    uint Splits) : ISpecialization
{
    public uint[] Constants() => [Local, BM, BN, BK, WM, WN, TM, TN, TK, GShift, Splits];
}

/// <summary>
/// tc/chunk_scan_bwd_dbc: the tile (<see cref="SsdTcSpec"/>), dB instead of dC (Reverse) and g read one step away.
/// </summary>
internal readonly record struct ChunkScanBwdDbcTcSpec(uint Local, uint BM, uint BN, uint BK, uint WM, uint WN, uint TM, uint TN, uint TK, bool Reverse,
    uint GShift) : ISpecialization
{
    public uint[] Constants() => [Local, BM, BN, BK, WM, WN, TM, TN, TK, Reverse ? 1u : 0u, GShift];
}

/// <summary>ssd/chunk_cumsum_bwd: its workgroup size and where the straddle sums come from (Telescoped: tc/chunk_scan_bwd_dcb's parts).</summary>
internal readonly record struct ChunkCumsumBwdSpec(uint Local, bool Telescoped) : ISpecialization
{
    public uint[] Constants() => [Local, Telescoped ? 1u : 0u];
}
