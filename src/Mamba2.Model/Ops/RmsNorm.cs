using System.Runtime.InteropServices;
using Mamba2.Model.Tensors;
using Mamba2.Vulkan;

namespace Mamba2.Model.Ops;

/// <summary>What <see cref="RmsNorm.Forward"/> returns: y (shaped as x) and the saved 1/rms per (row, group).</summary>
public sealed record RmsNormResult(Tensor Y, Tensor Rstd) : IDisposable
{
    public void Dispose()
    {
        Y.Dispose();
        Rstd.Dispose();
    }
}

/// <summary>Gradients of <see cref="RmsNorm.Backward"/>: dx, dweight (d) and dz when gated.</summary>
public sealed record RmsNormGradients(Tensor Dx, Tensor DWeight, Tensor? Dz) : IDisposable
{
    /// <summary>Every tensor held, as Dispose frees them.</summary>
    internal IEnumerable<Tensor> All() => Dz is null ? [Dx, DWeight] : [Dx, DWeight, Dz];

    public void Dispose()
    {
        foreach (var t in All())
        {
            t.Dispose();
        }
    }
}

/// <summary>
/// RMSNorm over the last dimension, optionally gated and per group, as mamba_ssm's <c>rms_norm_fn(x, weight, None, z,
/// eps, group_size, norm_before_gate)</c> (same defaults: eps 1e-6, whole row, gate after the norm):
/// y = norm(x) w silu(z), or with the gate first (norm_before_gate = false, as the Mamba2 layer uses it)
/// y = norm(x silu(z)) w. Without z it is the plain RMSNorm of the blocks and norm_f. Rows are every leading index.
/// </summary>
public static class RmsNorm
{
    [StructLayout(LayoutKind.Sequential)]
    private readonly record struct Push(uint Rows, uint Dim, uint GroupSize, float Eps, uint ZStride, uint ZCol);

    [StructLayout(LayoutKind.Sequential)]
    private readonly record struct BwdPush(uint Rows, uint Dim, uint GroupSize, uint BlockRows, uint ZStride, uint ZCol, uint DzStride, uint DzCol);

    /// <summary>
    /// The elements of a group each invocation aims to hold (the workgroup is sized from it): enough per invocation to
    /// keep loads in flight, few enough that a row's elements stay in registers. More on a CPU driver, where each
    /// barrier switches between the group's SIMD vectors.
    /// </summary>
    private const int PerInvocationGpu = 8;

    private const int PerInvocationCpu = 16;

    public static RmsNormResult Forward(Tensor x, Tensor weight, Tensor? z = null, float eps = 1e-6f, int? groupSize = null,
        bool normBeforeGate = true, CommandStream? stream = null) =>
        Forward(x, weight, z is null ? null : (ColumnView?)z, eps, groupSize, normBeforeGate, stream);

    /// <summary>The gated norm with z read in place: columns of a wider tensor with x's rows (the fused projection's z).</summary>
    public static RmsNormResult Forward(Tensor x, Tensor weight, ColumnView z, float eps = 1e-6f, int? groupSize = null,
        bool normBeforeGate = true, CommandStream? stream = null) =>
        Forward(x, weight, (ColumnView?)z, eps, groupSize, normBeforeGate, stream);

    /// <summary>
    /// The plain norm of x + <paramref name="residual"/>'s term, that sum written into its Sum as the pass reads the two
    /// (a block's norm in the residual stream: the stream's next value formed without a pass of its own).
    /// </summary>
    internal static RmsNormResult Forward(Tensor x, Tensor weight, ResidualSum residual, float eps, CommandStream? stream) =>
        Forward(x, weight, null, eps, null, true, stream, residual);

    private static RmsNormResult Forward(Tensor x, Tensor weight, ColumnView? z, float eps, int? groupSize, bool normBeforeGate, CommandStream? stream,
        ResidualSum? residual = null)
    {
        var (rows, dim, gs) = Validate("RmsNorm", x, weight, z, groupSize);
        CheckEps(eps);
        residual?.Check("RmsNorm", x);
        CheckNoResidualOnBf16("RmsNorm", x, residual is not null);
        var scope = new TensorScope(x.Device);
        try
        {
            var result = new RmsNormResult(scope.New("y", [.. x.Shape]), scope.New("rstd", (int)rows, dim / gs));
            Record(x, weight, z, eps, normBeforeGate, rows, dim, gs, result.Y.Buffer, result.Rstd, stream, residual: residual);
            return result;
        }
        catch
        {
            scope.DisposeAll();
            throw;
        }
    }

    /// <summary>
    /// The norm with y written into <paramref name="into"/> as the 16-bit operands a tensor-core product reads
    /// (<see cref="Gemm.Run"/> takes it in place of y). bf16 operands are written straight, not as fp32: no pass reads y
    /// back to convert it. f16 ones (and bf16 values as f16) carry a scale from the whole tensor's largest |y|: the
    /// norm writes fp32 y (scratch) and folds that max into the scale as it goes, and one pass converts y, where
    /// packing y afterwards would read it twice. Returns the saved 1/rms (rows, groups) for
    /// <see cref="Backward(Tensor, RmsNormResult, Tensor, Tensor, ColumnView, int?, bool, ColumnView?, CommandStream?)"/>'s
    /// inputs. The last dimension and the group size must be even (a word holds two neighbours of one row).
    /// </summary>
    public static Tensor ForwardPacked(Tensor x, Tensor weight, ColumnView? z, PackedOperand into, float eps = 1e-6f, int? groupSize = null,
        bool normBeforeGate = true, CommandStream? stream = null) =>
        ForwardPacked(x, weight, z, into, eps, groupSize, normBeforeGate, stream, null);

    /// <summary>The plain norm of x + <paramref name="residual"/>'s term into packed operands, the sum written as it is read.</summary>
    internal static Tensor ForwardPacked(Tensor x, Tensor weight, PackedOperand into, ResidualSum residual, float eps, CommandStream? stream) =>
        ForwardPacked(x, weight, null, into, eps, null, true, stream, residual);

    private static Tensor ForwardPacked(Tensor x, Tensor weight, ColumnView? z, PackedOperand into, float eps, int? groupSize, bool normBeforeGate,
        CommandStream? stream, ResidualSum? residual)
    {
        const string op = "RmsNorm (packed)";
        var (rows, dim, gs) = Validate(op, x, weight, z, groupSize);
        CheckEps(eps);
        residual?.Check(op, x);
        CheckNoResidualOnBf16(op, x, residual is not null);
        if (!CanPack(dim, gs))
        {
            throw new ArgumentException($"{op}: the last dimension ({dim}) and group_size ({gs}) must be even: a word holds two neighbours of one row.", nameof(x));
        }

        ShapeOps.ExpectSameDevice(op, x, into);
        ShapeOps.Expect(into, nameof(into), $"{op} (x is {ShapeOps.Format(x.Shape)})", [.. x.Shape]);
        var rstd = Tensor.Empty(x.Device, "rstd", (int)rows, dim / gs);
        try
        {
            Shaders.RunIn(x.Device, stream, st =>
            {
                if (into.Operands.Scaled() && z is not null)
                {
                    st.Fill(into.ScaleBits, 0u);   // the max it folds in
                    // The gate leaves |y| unbounded: fp32 y, its max folded, then converted.
                    var y = st.Own(Tensor.Empty(x.Device, "y", [.. x.Shape]));
                    Record(x, weight, z, eps, normBeforeGate, rows, dim, gs, y.Buffer, rstd, st, residual: residual, absMaxInto: into.ScaleBits);
                    TensorCoreGemm.PackFolded(st, y, into);
                }
                else
                {
                    // bf16 words (the kernel writes the scale word of 1), or f16 ones scaled by the plain norm's bound
                    // on |y| (its bits the scale word).
                    var pack = into.Operands switch
                    {
                        GemmOperands.Bf16 => RmsNormPack.Bf16,
                        GemmOperands.F16 => RmsNormPack.F16Bound,
                        _ => RmsNormPack.Bf16ViaF16Bound,
                    };
                    Record(x, weight, z, eps, normBeforeGate, rows, dim, gs, into.Words, rstd, st, pack, residual,
                        scaleInto: into.ScaleBits);
                }
            });
            return rstd;
        }
        catch
        {
            rstd.Dispose();
            throw;
        }
    }

    /// <summary>A bf16 x (the SSD's y on bf16 tensors) is the gated norm's; the residual stream's norms take float32.</summary>
    private static void CheckNoResidualOnBf16(string op, Tensor x, bool residual)
    {
        if (residual && x.DType != TensorDType.F32)
        {
            throw new ArgumentException($"{op}: a bfloat16 x takes no residual (the residual stream is float32).", nameof(residual));
        }
    }

    private static void CheckEps(float eps)
    {
        if (!(eps >= 0) || float.IsInfinity(eps))
        {
            throw new ArgumentOutOfRangeException(nameof(eps), eps, "RmsNorm: eps must be finite and >= 0.");
        }
    }

    /// <summary>Whether <see cref="ForwardPacked"/> takes rows of <paramref name="dim"/> in groups of <paramref name="groupSize"/>.</summary>
    public static bool CanPack(int dim, int groupSize) => dim % 2 == 0 && groupSize % 2 == 0;

    /// <summary>
    /// The forward's dispatches into y (fp32, or operand words with <paramref name="pack"/>), a piece of rows at a
    /// time; <paramref name="absMaxInto"/> takes the fold of fp32 y's max, <paramref name="scaleInto"/> the packed
    /// operands' scale word (the f16 forms' bound, bf16's 1), which the kernel writes.
    /// </summary>
    private static void Record(Tensor x, Tensor weight, ColumnView? z, float eps, bool normBeforeGate, long rows, int dim, int gs,
        GpuBuffer y, Tensor rstd, CommandStream? stream, RmsNormPack pack = RmsNormPack.None, ResidualSum? residual = null,
        GpuBuffer<uint>? absMaxInto = null, GpuBuffer<uint>? scaleInto = null)
    {
        var device = x.Device;
        var groups = dim / gs;
        var local = Team(device, gs);
        var bf16 = x.DType == TensorDType.BF16;   // x read as bf16 (the SSD's y on bf16 tensors)
        var bf16Z = z?.Tensor.DType == TensorDType.BF16;   // z read as bf16 (in_proj's output in bf16)
        var source = Shaders.RmsNormOf(bf16, bf16Z);
        var form = Form(z, normBeforeGate, residual is not null);
        var packed = pack != RmsNormPack.None;
        if (packed && scaleInto is null)
        {
            // The kernel writes the word: without one it would land on the operands' first word.
            throw new ArgumentNullException(nameof(scaleInto), "RmsNorm: packed operands need their scale word.");
        }

        var yPerRow = packed ? dim / 2 : dim;   // y's 4-byte elements a row: floats, or words of two operands
        Shaders.RunIn(device, stream, st =>
        {
            foreach (var (first, count) in RowPieces(device, "RmsNorm", rows, dim, groups, 1, bf16, bf16Z ? z!.Value.Stride : null, z?.Stride ?? dim, yPerRow))
            {
                var xRows = Shaders.Slice(x, first * dim, count * dim, bf16);
                var yRows = new BufferBinding(y, (ulong)(first * yPerRow * 4), (ulong)(count * yPerRow * 4));
                // Without a residual (or z) their bindings take ranges the pass already reads (x) and writes (y).
                BufferBinding[] bindings = [xRows, z is { } zv ? RowsOf(zv, first, count) : xRows, weight.Buffer, yRows,
                    Shaders.Slice(rstd, first * groups, count * groups),
                    residual is { } term ? Shaders.Slice(term.Term, first * dim, count * dim) : xRows,
                    residual is { } sum ? Shaders.Slice(sum.Sum, first * dim, count * dim) : yRows,
                    absMaxInto ?? scaleInto ?? yRows];
                var quads = Quads([dim, gs, z?.Stride ?? 0, z?.Start ?? 0], bindings);
                var spec = new RmsNormSpec(local, PerInvocation(gs, local, quads ? 4 : packed ? 2 : 1), pack, quads, absMaxInto is not null, form);
                st.Dispatch(device.GetKernel(source, spec), (Shaders.Groups(device, count * groups), 1, 1),
                    new Push((uint)count, (uint)dim, (uint)gs, eps, (uint)(z?.Stride ?? dim), (uint)(z?.Start ?? 0)), bindings);
            }
        });
    }

    /// <summary>Gradients from dy with the forward's inputs, settings and result (its saved 1/rms).</summary>
    public static RmsNormGradients Backward(Tensor dy, RmsNormResult saved, Tensor x, Tensor weight, Tensor? z = null, int? groupSize = null,
        bool normBeforeGate = true, CommandStream? stream = null) =>
        Backward(dy, saved.Rstd, x, weight, z is null ? null : (ColumnView?)z, groupSize, normBeforeGate, null, stream);

    /// <summary>
    /// The gated norm's gradients with z read in place (as <see cref="Forward(Tensor, Tensor, ColumnView, float, int?, bool, CommandStream?)"/>)
    /// and, when <paramref name="dzInto"/> is given, dz written into those columns of a wider tensor (the fused
    /// projection's gradient) instead of a tensor of its own (the result's Dz is then null).
    /// </summary>
    public static RmsNormGradients Backward(Tensor dy, RmsNormResult saved, Tensor x, Tensor weight, ColumnView z, int? groupSize = null,
        bool normBeforeGate = true, ColumnView? dzInto = null, CommandStream? stream = null) =>
        Backward(dy, saved.Rstd, x, weight, z, groupSize, normBeforeGate, dzInto, stream);

    /// <summary>
    /// The same from the forward's saved 1/rms alone (all the backward reads of its result); dz goes into
    /// <paramref name="dzInto"/>'s columns, or stored as bf16 into <paramref name="dzPacked"/>'s (the products' operands).
    /// With <paramref name="residual"/> (x's shape) the result's Dx is the norm's input gradient plus it: a block's
    /// norm in the residual stream adds the stream's gradient in the same pass. With <paramref name="dzAbsMaxInto"/>
    /// (or <paramref name="dxAbsMaxInto"/>) the largest |dz| (|dx|) written is folded into that word too
    /// (<see cref="TensorCoreGemm.PackFolded"/>). With <paramref name="dxPackedInto"/> (bf16 operands of x's rows, a
    /// plain norm's) dx is also stored there, as <see cref="Gemm.Pack"/> would pack it: the layer below's dout for
    /// its products, with no pass that reads dx again.
    /// </summary>
    internal static RmsNormGradients Backward(Tensor dy, Tensor rstd, Tensor x, Tensor weight, ColumnView? z, int? groupSize,
        bool normBeforeGate, ColumnView? dzInto, CommandStream? stream, PackedColumns? dzPacked = null, Tensor? residual = null,
        GpuBuffer<uint>? dzAbsMaxInto = null, GpuBuffer<uint>? dxAbsMaxInto = null, PackedOperand? dxPackedInto = null)
    {
        const string op = "RmsNorm backward";
        var (rows, dim, gs) = Validate(op, x, weight, z, groupSize);
        if (residual is not null)
        {
            ShapeOps.Expect(residual, nameof(residual), op, [.. x.Shape]);
            ShapeOps.ExpectSameDevice(op, x, residual);
        }

        if (dzInto is { } into)
        {
            if (z is null)
            {
                throw new ArgumentException($"{op}: dz has somewhere to go ({into}) but there is no z.", nameof(dzInto));
            }

            ExpectRowsOf(op, "dz", into, x, dim);
            ShapeOps.ExpectSameDevice(op, x, into.Tensor);
        }

        if (dzAbsMaxInto is not null && (z is null || dzPacked is not null))
        {
            throw new ArgumentException($"{op}: the largest |dz| is folded only where dz is written as float32.", nameof(dzAbsMaxInto));
        }

        if (dxAbsMaxInto is not null && (x.DType != TensorDType.F32 || dzAbsMaxInto is not null))
        {
            throw new ArgumentException($"{op}: the largest |dx| is folded only where dx is float32, and not with dz's.", nameof(dxAbsMaxInto));
        }

        var fold = dzAbsMaxInto is not null ? RmsNormBwdFold.Dz : dxAbsMaxInto is not null ? RmsNormBwdFold.Dx : RmsNormBwdFold.None;

        PackedColumns? dxPacked = null;
        if (dxPackedInto is { } dxInto)
        {
            if (z is not null || x.DType != TensorDType.F32 || dxAbsMaxInto is not null)
            {
                throw new ArgumentException($"{op}: dx as bf16 operands ({dxInto}) is a plain norm's float32 dx (no z), not with its largest |dx| folded.",
                    nameof(dxPackedInto));
            }

            dxPacked = new PackedColumns(dxInto, 0, dim);   // bf16 operands only
            if (dxInto.Shape[^1] != dim || dxPacked.Value.Rows != rows)
            {
                throw new ArgumentException($"{op}: dx's operands must be {rows} rows of {dim} (x is {ShapeOps.Format(x.Shape)}), got {dxInto}.", nameof(dxPackedInto));
            }

            ShapeOps.ExpectSameDevice(op, x, dxInto);
            dxPacked.Value.ExpectWritable(op);
        }

        if (dzPacked is { } packed)
        {
            if (z is null || dzInto is not null)
            {
                throw new ArgumentException($"{op}: dz as bf16 ({packed}) needs z and no other place for dz.", nameof(dzPacked));
            }

            if (packed.Width != dim || packed.Rows != rows)
            {
                throw new ArgumentException($"{op}: dz must be {rows} rows of {dim} columns (x is {ShapeOps.Format(x.Shape)}), got {packed}.", nameof(dzPacked));
            }

            ShapeOps.ExpectSameDevice(op, x, packed.Packed);
            packed.ExpectWritable(op);
        }

        var groups = dim / gs;
        ShapeOps.Expect(dy, "dy", op, [.. x.Shape]);
        ShapeOps.Expect(rstd, "saved.Rstd", $"{op}: saved must come from Forward with this group size", (int)rows, groups);
        ShapeOps.ExpectSameDevice(op, dy, x, rstd);
        var device = x.Device;
        var bf16 = x.DType == TensorDType.BF16;   // x read and dx written as bf16 (the SSD's y and its gradient)
        var bf16Z = z?.Tensor.DType == TensorDType.BF16;   // z read as bf16 (in_proj's output in bf16)
        CheckNoResidualOnBf16(op, x, residual is not null);

        if (dy.DType != TensorDType.F32)
        {
            throw new ArgumentException($"{op}: dy must be float32, got {dy.DType.Name()}.", nameof(dy));
        }

        var scope = new TensorScope(device);
        try
        {
            var grads = new RmsNormGradients(scope.NewOf(x.DType, "dx", [.. x.Shape]), scope.New("dweight", dim),
                z is null || dzInto is not null || dzPacked is not null ? null : scope.New("dz", [.. x.Shape]));
            var dz = dzInto ?? (grads.Dz is null ? null : (ColumnView?)grads.Dz);
            var mark = scope.Count;
            var form = OpTuning.Of(device).NormBackward ?? NormBackwardForm.Default;
            var blockRows = form.BlockRows;
            var units = (rows + blockRows - 1) / blockRows;
            var dwPart = scope.New("dweight_part", (int)units, dim);
            var normForm = Form(z, normBeforeGate, residual is not null);
            var outPacked = dzPacked ?? dxPacked;   // the bf16 output: dz's columns, or dx's copy
            var local = Team(device, gs);
            var source = Shaders.RmsNormBwdOf(bf16, outPacked is not null, bf16Z);
            Shaders.RunIn(device, stream, st =>
            {
                foreach (var t in scope.Since(mark))
                {
                    st.Own(t);
                }

                foreach (var (first, count) in RowPieces(device, op, rows, dim, groups, blockRows, bf16, bf16Z ? z!.Value.Stride : null, z?.Stride ?? dim,
                             dzInto?.Stride ?? dim))
                {
                    BufferBinding Rows(Tensor t) => Shaders.Slice(t, first * dim, count * dim, t.DType == TensorDType.BF16);
                    // A packed dz is bound whole: its piece's first row is in the start column (16-bit offsets need not align).
                    var (dzStride, dzStart) = outPacked is { } pk ? (pk.Stride, pk.Start + (first * pk.Stride)) : (dz?.Stride ?? dim, dz?.Start ?? 0);
                    var push = new BwdPush((uint)count, (uint)dim, (uint)gs, (uint)blockRows, (uint)(z?.Stride ?? dim), (uint)(z?.Start ?? 0),
                        (uint)dzStride, (uint)dzStart);
                    var pieceUnits = (count + blockRows - 1) / blockRows;
                    BufferBinding[] bindings = [Rows(dy), Rows(x), z is { } zv ? RowsOf(zv, first, count) : Rows(dy), weight.Buffer,
                        Shaders.Slice(rstd, first * groups, count * groups), Rows(grads.Dx),
                        outPacked?.Words ?? (dz is { } dzv ? RowsOf(dzv, first, count) : Rows(dy)), Shaders.Slice(dwPart, first / blockRows * dim, pieceUnits * dim),
                        Rows(residual ?? dy), dzAbsMaxInto ?? dxAbsMaxInto ?? outPacked?.Packed.ScaleBits ?? Rows(grads.Dx)];   // the copy's scale: 1
                    var quads = Quads([dim, gs, z?.Stride ?? 0, z?.Start ?? 0, dzStride, dzStart], bindings);
                    var rowPer = PerInvocation(gs, local, quads ? 4 : 1);
                    if (form.Fused)
                    {
                        st.Dispatch(device.GetKernel(source, new RmsNormBwdSpec(local, RmsNormBwdMode.Fused, rowPer, quads, fold, dxPacked is not null, normForm)),
                            (Shaders.Groups(device, pieceUnits * groups), 1, 1), push, bindings);
                        continue;
                    }

                    st.Dispatch(device.GetKernel(source, new RmsNormBwdSpec(local, RmsNormBwdMode.InputGradients, rowPer, quads, fold, dxPacked is not null, normForm)),
                        (Shaders.Groups(device, count * groups), 1, 1), push, bindings);
                    var local1D = Shaders.Local1D(device);
                    st.Dispatch(device.GetKernel(source, new RmsNormBwdSpec(local1D, RmsNormBwdMode.WeightPartials, 1, Form: normForm)),
                        (Shaders.Groups1D(device, pieceUnits * dim, local1D), 1, 1), push, bindings);
                }

                Reductions.Sum(st, dwPart.Buffer, grads.DWeight.Buffer, (uint)units, (uint)dim);
            });
            return grads;
        }
        catch
        {
            scope.DisposeAll();
            throw;
        }
    }

    private static RmsNormForm Form(ColumnView? z, bool normBeforeGate, bool residual) =>
        (z is null ? RmsNormForm.Plain : normBeforeGate ? RmsNormForm.Gated | RmsNormForm.GateAfterNorm : RmsNormForm.Gated) |
        (residual ? RmsNormForm.Residual : RmsNormForm.Plain);

    /// <summary>Rows [first, first + count) of a column view: its tensor's whole rows (the kernel adds the start column).</summary>
    private static BufferBinding RowsOf(ColumnView v, long first, long count) =>
        Shaders.Slice(v.Tensor, first * v.Stride, count * v.Stride, v.Tensor.DType == TensorDType.BF16);

    /// <summary>A view with x's rows, <paramref name="dim"/> columns wide.</summary>
    private static void ExpectRowsOf(string op, string name, ColumnView v, Tensor x, int dim)
    {
        if (v.Width != dim || v.Rows != x.Length / dim)
        {
            throw new ArgumentException($"{op}: {name} must be {x.Length / dim} rows of {dim} columns (x is {ShapeOps.Format(x.Shape)}), got {v}.", name);
        }
    }

    /// <summary>
    /// The workgroup of one (row, group) item: a power of two sized so that each invocation holds about
    /// <see cref="PerInvocationGpu"/> of the group's elements (at least a warp on a GPU, a SIMD vector on a CPU driver),
    /// or the tests' forced size; <see cref="PerInvocation"/> gives the exact count.
    /// </summary>
    private static uint Team(GpuDevice device, int groupSize)
    {
        var cpu = device.Info.IsCpu;
        var perInvocation = cpu ? PerInvocationCpu : PerInvocationGpu;
        var width = (groupSize + perInvocation - 1) / perInvocation;
        // Shaders.RowLocal sizes a GPU's group by the width, as wanted here, but gives a CPU driver one SIMD vector
        // whatever the row: too many elements per invocation for registers on a wide row.
        return cpu && OpTuning.Of(device).RowLocal is null
            ? Math.Max(Shaders.RowLocal(device, width), Math.Min(Shaders.PowerOfTwoLocal(device), System.Numerics.BitOperations.RoundUpToPowerOf2((uint)width)))
            : Shaders.RowLocal(device, width);
    }

    /// <summary>Elements of a group an invocation holds: whole runs of <paramref name="run"/> neighbours over the workgroup.</summary>
    private static uint PerInvocation(int groupSize, uint local, int run) =>
        (uint)((groupSize / run + local - 1) / local * run);

    /// <summary>
    /// Whether a pass may move runs of four neighbours at a time (QUADS): every row length, stride and start column
    /// in <paramref name="elements"/> a multiple of four, every binding at a 16-byte offset.
    /// </summary>
    private static bool Quads(ReadOnlySpan<long> elements, ReadOnlySpan<BufferBinding> bindings)
    {
        foreach (var e in elements)
        {
            if (e % 4 != 0)
            {
                return false;
            }
        }

        foreach (var b in bindings)
        {
            if (b.Offset % 16 != 0)
            {
                return false;
            }
        }

        return true;
    }

    /// <summary>
    /// Row ranges bound together: whole blocks of <paramref name="blockRows"/> rows (the weight-gradient partials stay
    /// aligned), sized and aligned for x's rows and for the rows of the column views' tensors (<paramref name="viewStrides"/>);
    /// <paramref name="bf16Rows"/>: x's rows are bound as 16-bit elements, <paramref name="bf16ViewStride"/>: so are a
    /// view's rows of that stride (a bf16 z).
    /// </summary>
    private static IEnumerable<(long First, long Count)> RowPieces(GpuDevice device, string op, long rows, int dim, int groups, int blockRows,
        bool bf16Rows, int? bf16ViewStride, params int[] viewStrides)
    {
        var units = (rows + blockRows - 1) / blockRows;
        long[] perUnit = [(long)blockRows * dim, (long)blockRows * groups, .. viewStrides.Select(v => (long)blockRows * v)];
        long[] halves = [.. bf16Rows ? [(long)blockRows * dim] : Array.Empty<long>(), .. bf16ViewStride is { } vs ? [(long)blockRows * vs] : Array.Empty<long>()];
        foreach (var (first, count) in Shaders.BatchPieces(device, op, units, perUnit, OpTuning.Of(device).MaxBindingBytes, halves))
        {
            var firstRow = first * blockRows;
            yield return (firstRow, Math.Min(count * blockRows, rows - firstRow));
        }
    }

    private static (long Rows, int Dim, int GroupSize) Validate(string op, Tensor x, Tensor weight, ColumnView? z, int? groupSize)
    {
        var dim = x.Shape[^1];
        ShapeOps.Expect(weight, "weight", $"{op} (x is {ShapeOps.Format(x.Shape)})", dim);
        if (z is { IsWhole: true } whole)
        {
            ShapeOps.Expect(whole.Tensor, "z", op, [.. x.Shape]);
        }
        else if (z is { } view)
        {
            ExpectRowsOf(op, "z", view, x, dim);
        }

        var gs = groupSize ?? dim;
        if (gs <= 0 || dim % gs != 0)
        {
            throw new ArgumentException($"{op}: group_size must divide the last dimension {dim}, got {gs}.", nameof(groupSize));
        }

        ShapeOps.ExpectSameDevice(op, [.. new[] { x, weight, z?.Tensor }.OfType<Tensor>()]);
        Shaders.EnsureBindable(op, weight);
        return (x.Length / dim, dim, gs);
    }
}

/// <summary>
/// A block norm's residual input: the norm reads x + <see cref="Term"/> and writes that sum into <see cref="Sum"/> (both
/// x's shape; Sum is the residual stream's next value, distinct from both terms).
/// </summary>
internal readonly record struct ResidualSum(Tensor Term, Tensor Sum)
{
    public void Check(string op, Tensor x)
    {
        ShapeOps.Expect(Term, "residual", op, [.. x.Shape]);
        ShapeOps.Expect(Sum, "sum", op, [.. x.Shape]);
        ShapeOps.ExpectSameDevice(op, x, Term, Sum);
        if (ReferenceEquals(Sum, x) || ReferenceEquals(Sum, Term))
        {
            throw new ArgumentException($"{op}: the sum must go to a tensor of its own, not {Sum.Name}.", "sum");
        }
    }
}
